"""AU-intensity network of paper §5.3: the ResNet backbone and a linear head regressing every AU with an L2 loss."""
import torch
from torch import nn


class AUIntensityNet(nn.Module):
    """``backbone`` (common.backbone.Backbone) + ``nn.Linear(num_features, num_aus)``.

    Paper §5.3: "The network head h(.) is implemented using a linear layer. The whole network is
    trained to regress the intensity value of each AU using an l2 loss." Outputs are on the label
    scale (intensity 0-5); Bulat et al., ECCV 2022, https://arxiv.org/abs/2103.16554.
    """

    def __init__(self, backbone, num_aus):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_aus)

    def forward(self, x):
        return self.head(self.backbone(x))                                    # N x num_aus


def au_l2_loss(pred, target):
    """Mean squared error over frames and AUs (the paper's l2 regression loss)."""
    return torch.mean((pred.float() - target) ** 2)
