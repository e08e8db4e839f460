"""CosFace, the large margin cosine loss used to train face recognition (paper §5.1, App. A.2: m = 0.35).

Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018,
https://arxiv.org/abs/1801.09414. With L2-normalised embeddings x and class weights W_j,
cos_j = <x, W_j> is clamped to [-1, 1], the margin is subtracted from the target cosine BEFORE
scaling, and every logit is multiplied by s:

    logit_j = s * (cos_j - m * [j == y]),   loss = cross_entropy(logits, y)

as insightface's ``arcface_torch`` (``partial_fc_v2.py`` clamps, ``losses.py::CombinedMarginLoss``
subtracts m3 then scales) and its legacy CosFace config (s = 64, m3 = 0.35)
(shared/research/anchors_recog_au_emotion.md §1.6). Rows labelled -1 (unreadable images,
face_recognition/data.py) contribute nothing.
"""
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL = -1


def cosface_logits(cosine: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """s * (clamp(cos, -1, 1) - m * onehot(y)); rows whose label is -1 get no margin.

    cosine: N x C cosines; labels: N class indices (or -1). Returns N x C logits."""
    cosine = cosine.clamp(-1.0, 1.0)
    valid = labels != IGNORE_LABEL
    onehot = torch.zeros_like(cosine)
    onehot[valid] = F.one_hot(labels[valid], cosine.shape[1]).to(cosine.dtype)
    return scale * (cosine - margin * onehot)


class CosFace(nn.Module):
    """Class-centre matrix W (num_classes x dim) and the CosFace loss on raw embeddings.

    >>> head = CosFace(embedding_dim=512, num_classes=8631, scale=64.0, margin=0.35)
    >>> loss, logits = head(embeddings, labels)      # embeddings: N x 512, raw (not normalised)
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, scale: float = 64.0, margin: float = 0.35):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"CosFace needs at least 2 classes, got {num_classes}")
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)  # arcface_torch PartialFC_V2: N(0, 0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x C cosine similarities between the embeddings and every class centre (float32)."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor):
        """(mean loss over rows with a label, N x C logits). All rows -1 gives a zero loss that
        still depends on the parameters, so DDP sees every gradient."""
        logits = cosface_logits(self.cosine(embeddings), labels, self.scale, self.margin)
        if bool((labels == IGNORE_LABEL).all()):
            return logits.sum() * 0.0, logits
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL), logits
