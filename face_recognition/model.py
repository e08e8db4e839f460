"""Face recognition network of paper §5.1: ResNet backbone + embedding head h(.) + CosFace classifier.

The paper: "The task specific head h(.) consists of a linear layer" (§5.1). The default head is
therefore one ``nn.Linear(num_features, 512)`` on the globally pooled backbone features
(``model.head: linear``). ``model.head: bn`` is insightface ``arcface_torch``'s iresnet output
block instead (BatchNorm - Dropout - Linear - BatchNorm; ``backbones/iresnet.py``), here on the
pooled vector because ``common.backbone.Backbone`` pools layer4; 512-d is the community default
embedding size (arcface_torch ``embedding_size = 512``).
"""
import torch
from torch import nn

from common.backbone import build_backbone
from face_recognition.cosface import CosFace

HEADS = ("linear", "bn")


def embedding_head(in_features: int, embedding_dim: int, kind: str = "linear", dropout: float = 0.0) -> nn.Module:
    """The head h(.): pooled backbone features (N x in_features) -> raw embeddings (N x embedding_dim)."""
    if kind == "linear":
        return nn.Linear(in_features, embedding_dim)
    if kind == "bn":
        return nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(dropout),
                             nn.Linear(in_features, embedding_dim), nn.BatchNorm1d(embedding_dim))
    raise ValueError(f"model.head={kind!r}: expected one of {HEADS}")


class FaceEmbedder(nn.Module):
    """backbone -> pooled features -> h(.) -> raw (unnormalised) embedding (what IJB evaluates)."""

    def __init__(self, backbone: nn.Module, embedding_dim: int = 512, head: str = "linear", dropout: float = 0.0):
        super().__init__()
        self.backbone, self.embedding_dim = backbone, embedding_dim
        self.head = embedding_head(backbone.num_features, embedding_dim, head, dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W aligned faces -> N x embedding_dim raw embeddings."""
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


class FaceRecognitionModel(FaceEmbedder):
    """The trained model: the embedder plus the CosFace class centres.

    State-dict keys: ``backbone.*`` (torchvision names, so other tasks can take ``model.init`` from
    this run's ``last.pth``), ``head.*`` and ``cosface.weight``."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, embedding_dim: int = 512, head: str = "linear",
                 dropout: float = 0.0, scale: float = 64.0, margin: float = 0.35):
        super().__init__(backbone, embedding_dim, head, dropout)
        self.cosface = CosFace(embedding_dim, num_classes, scale=scale, margin=margin)

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        """(loss, logits N x C) for a batch of aligned faces and their class indices (-1 = skip)."""
        return self.cosface(self.embed(images), labels)


def embedder_from_state(state, source, *, arch: str, embedding_dim: int, head: str) -> FaceEmbedder:
    """The embedder of a loaded face_recognition checkpoint (``runs/NAME/last.pth``): backbone and
    head loaded strictly; only the CosFace class centres ``cosface.*`` are left out."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{source}: not a face_recognition checkpoint (no 'model' state dict)")
    sd = {k: v for k, v in state["model"].items() if not k.startswith("cosface.")}
    embedder = FaceEmbedder(build_backbone(arch, "scratch"), embedding_dim, head)
    missing, unexpected = embedder.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: does not match a {arch} embedder with a {head!r} head of dim "
                         f"{embedding_dim}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    return embedder
