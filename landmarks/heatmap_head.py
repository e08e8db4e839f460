"""Heatmap head and landmark model (paper §5.2): 1x1 convs + bilinear upsampling with summed skips.

Bulat et al., ECCV 2022, https://arxiv.org/abs/2103.16554, §5.2: "a set of 3 1x1 conv. layers
with 256 channels, each interleaved with bilinear upsampling operations for recovering part of
the lost resolution. Additional high resolution information is brought up via skip connections
and summation from the lower part of the network." From layer4 (stride 32) three x2 steps reach
layer1's stride 4: a 256 input gives 64 x 64 heatmaps. The paper does not state the norm /
activation or how the skips are matched in width; we use Conv-BN-ReLU blocks and 1x1 projections
of layer3 / layer2 / layer1 to 256 channels (project choice).
"""
import torch.nn.functional as F
from torch import nn


def _conv_bn(in_channels, out_channels, relu):
    layers = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class HeatmapHead(nn.Module):
    """layer1..layer4 maps -> (N, n_points, H/4, W/4) heatmaps.

    in_channels: the four stage widths of the backbone (``Backbone.channels``).
    """

    def __init__(self, in_channels, n_points, width=256):
        super().__init__()
        c1, c2, c3, c4 = in_channels
        self.blocks = nn.ModuleList([_conv_bn(c4, width, True), _conv_bn(width, width, True),
                                     _conv_bn(width, width, True)])
        self.skips = nn.ModuleList([_conv_bn(c, width, False) for c in (c3, c2, c1)])
        self.out = nn.Conv2d(width, n_points, 1)

    def forward(self, maps):
        x = maps[3]                                                      # N x C4 x H/32 x W/32
        for block, skip, feat in zip(self.blocks, self.skips, (maps[2], maps[1], maps[0])):
            x = F.interpolate(block(x), size=feat.shape[-2:], mode="bilinear", align_corners=False)
            x = x + skip(feat)                                           # N x width x (2x previous)
        return self.out(x)                                               # N x P x H/4 x W/4


class LandmarkModel(nn.Module):
    """Backbone (attribute ``backbone``, so checkpoint keys are ``backbone.*``) + heatmap head."""

    def __init__(self, backbone, n_points, width=256):
        super().__init__()
        self.backbone = backbone
        self.head = HeatmapHead(backbone.channels, n_points, width)

    def forward(self, x):
        return self.head(self.backbone.feature_maps(x))
