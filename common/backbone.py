"""ResNet backbone shared by pre-training and every face task (paper §3, §4: ResNet-50 throughout).

The backbone keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``) and
drops ``fc``, so its state dict is a torchvision ResNet state dict without the classifier.
"""
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from common.checkpoint import load_backbone

# torchvision constructor and its ImageNet weights in order of preference: IMAGENET1K_V1 first,
# the classic 76.1 % top-1 ResNet-50 that "ImageNet supervised" baselines of the era used.
_ARCHS = {
    "resnet18": (models.resnet18, (models.ResNet18_Weights.IMAGENET1K_V1,)),
    "resnet50": (models.resnet50, (models.ResNet50_Weights.IMAGENET1K_V1,
                                   models.ResNet50_Weights.IMAGENET1K_V2)),
}


class Backbone(nn.Module):
    """torchvision ResNet without ``fc``; returns the four stage maps or pooled features."""

    def __init__(self, arch: str = "resnet50"):
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown backbone arch {arch!r}; expected one of {sorted(_ARCHS)}")
        net = _ARCHS[arch][0](weights=None)
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = tuple(_out_channels(layer) for layer in self.stages())
        self.num_features = self.channels[-1]

    def stages(self) -> tuple:
        return self.layer1, self.layer2, self.layer3, self.layer4

    def feature_maps(self, x: torch.Tensor) -> list:
        """Outputs of layer1..layer4: N x C_i x H/4 x W/4 down to N x C_4 x H/32 x W/32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in self.stages():
            x = layer(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled layer4 features, N x num_features."""
        return self.feature_maps(x)[-1].mean(dim=(2, 3))


def _out_channels(layer: nn.Sequential) -> int:
    last_block = layer[-1]
    last_bn = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return last_bn.num_features


def imagenet_weights_path(arch: str) -> Path:
    """The torchvision ImageNet file for ``arch`` in the local torch hub cache (never downloads)."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; expected one of {sorted(_ARCHS)}")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [folder / Path(w.url).name for w in _ARCHS[arch][1]]
    for path in candidates:
        if path.is_file():
            return path
    wanted = "\n".join(f"  {p}   (from {w.url})" for p, w in zip(candidates, _ARCHS[arch][1]))
    raise FileNotFoundError(
        f"model.init=imagenet needs torchvision's ImageNet weights for {arch}, and this machine "
        f"does not download them. Put one of these files in place (first one preferred):\n{wanted}\n"
        f"(the folder is torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it), "
        f"or pass the file's path instead: model.init=/path/to/{candidates[0].name}"
    )


def build_backbone(arch: str = "resnet50", init: str = "scratch") -> Backbone:
    """Backbone initialised from ``init``: "scratch" (torchvision's random init), "imagenet"
    (torchvision weights from the local hub cache) or a checkpoint path in any layout that
    ``common.checkpoint.backbone_state_dict`` recognises (ours, FRL, SwAV, MoCo, torchvision)."""
    backbone = Backbone(arch)
    if init == "scratch":
        return backbone
    path = imagenet_weights_path(arch) if init == "imagenet" else Path(init)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.init={init!r}: no such file; expected 'scratch', 'imagenet' or a checkpoint path")
    load_backbone(backbone, path)
    return backbone
