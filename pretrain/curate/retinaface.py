"""RetinaFace (Deng et al. 2019, arXiv:1905.00641), the detector the paper crops every pre-training
image with (App. A.1, App. C, ref. [18]); ResNet-50 and MobileNet-0.25 variants.

Module and parameter names follow biubug6/Pytorch_Retinaface (`body`, `fpn`, `ssh1..3`,
`ClassHead`/`BboxHead`/`LandmarkHead`, each a list of three 1x1 convs), so its public weight files
(`Resnet50_Final.pth`, `mobilenet0.25_Final.pth`, keys prefixed `module.`) load with strict=True.
Facts from that repository (read, not copied): input is BGR minus (104, 117, 123), unscaled;
two anchors per location with sizes [[16, 32], [64, 128], [256, 512]] on strides [8, 16, 32]
(feature map size ceil(H / stride)), anchors ordered row, column, size; box decoding with
variances (0.1, 0.2); softmax class scores; NMS 0.4.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.ops import batched_nms

from common.face_detect.base import Detector

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)
VARIANTS = {"resnet50": (256, 256), "mobilenet0.25": (32, 64)}  # (in_channel, out_channel)


def conv_bn(inp, oup, stride=1, leaky=0.0, kernel=3, relu=True, groups=1):
    layers = [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    return nn.Sequential(*layers, nn.LeakyReLU(leaky, inplace=True)) if relu else nn.Sequential(*layers)


def conv_dw(inp, oup, stride, leaky=0.1):
    """Depthwise 3x3 + pointwise 1x1, each with BN and leaky ReLU (indices 0..5)."""
    return nn.Sequential(*conv_bn(inp, inp, stride, leaky, groups=inp), *conv_bn(inp, oup, 1, leaky, kernel=1))


class MobileNetV1(nn.Module):
    """MobileNet-0.25 trunk: three stages at strides 8, 16, 32 with 64, 128, 256 channels."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class ResNet50Trunk(nn.Module):
    """torchvision ResNet-50 without avgpool/fc, returning layer2..layer4 (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        net = resnet50()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x):
        c2 = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1, self.output2, self.output3 = (conv_bn(c, out_channels, 1, leaky, kernel=1) for c in in_channels)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Context module: concat of 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, then ReLU."""

    def __init__(self, channels):
        super().__init__()
        leaky = 0.1 if channels <= 64 else 0.0
        self.conv3X3 = conv_bn(channels, channels // 2, relu=False)
        self.conv5X5_1 = conv_bn(channels, channels // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn(channels // 4, channels // 4, relu=False)
        self.conv7X7_2 = conv_bn(channels // 4, channels // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn(channels // 4, channels // 4, relu=False)  # lower-case x, as published

    def forward(self, x):
        c5_1 = self.conv5X5_1(x)
        out = [self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))]
        return F.relu(torch.cat(out, 1))


class Head(nn.Module):
    """1x1 conv predicting `per_anchor` values for each of 2 anchors -> (N, H*W*2, per_anchor)."""

    def __init__(self, channels, per_anchor, anchors=2):
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(channels, anchors * per_anchor, 1)

    def forward(self, x):
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """forward(BGR-mean-subtracted (N,3,H,W)) -> loc (N,A,4), scores (N,A), landmarks (N,A,10)."""

    def __init__(self, variant="resnet50"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown RetinaFace variant {variant!r}; choose from {sorted(VARIANTS)}")
        inc, outc = VARIANTS[variant]
        self.variant = variant
        self.body = ResNet50Trunk() if variant == "resnet50" else MobileNetV1()
        self.fpn = FPN([inc * 2, inc * 4, inc * 8], outc)
        self.ssh1, self.ssh2, self.ssh3 = SSH(outc), SSH(outc), SSH(outc)
        self.ClassHead = nn.ModuleList(Head(outc, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(outc, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(outc, 10) for _ in range(3))

    def forward(self, x):
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], 1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], 1)
        landm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], 1)
        return loc, conf.softmax(-1)[..., 1], landm


def prior_boxes(height, width):
    """Anchors (A, 4) as (cx, cy, w, h) normalised by the image size, in the network's output order."""
    priors = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid((torch.arange(fh) + 0.5) * step / height,
                                (torch.arange(fw) + 0.5) * step / width, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor([[s / width, s / height] for s in sizes]).expand(fh * fw, -1, -1)
        priors.append(torch.cat([centres, wh], -1).reshape(-1, 4))
    return torch.cat(priors)


def decode(loc, landm, priors, height, width):
    """Box offsets -> (x1, y1, x2, y2) pixels; landmark offsets -> (5, 2) pixels (batched over dim 0)."""
    centre = priors[:, :2] + loc[..., :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    scale = torch.tensor([width, height], dtype=loc.dtype, device=loc.device)
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1) * scale.repeat(2)
    points = priors[:, None, :2] + landm.unflatten(-1, (5, 2)) * VARIANCES[0] * priors[:, None, 2:]
    return boxes, points * scale


class RetinaFaceDetector(Detector):
    """RetinaFace behind the `Detector` interface (common/face_detect/base.py); keeps scores > score_threshold."""

    def __init__(self, model, *, score_threshold=0.5, nms_threshold=0.4, top_k=5000, keep_top_k=750,
                 device="cpu"):
        self.model = model.eval().to(device)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.top_k, self.keep_top_k, self.device = top_k, keep_top_k, torch.device(device)

    def _detect_batch(self, imgs):
        n, _, h, w = imgs.shape
        mean = torch.tensor(BGR_MEAN, device=imgs.device).view(1, 3, 1, 1)
        loc, scores, landm = self.model(imgs.flip(1) - mean)  # RGB -> BGR
        boxes, points = decode(loc, landm, prior_boxes(h, w).to(loc), h, w)
        img_idx, anchor = (scores > self.score_threshold).nonzero(as_tuple=True)
        s = scores[img_idx, anchor]
        top = s.argsort(descending=True)[: self.top_k * n]
        img_idx, anchor, s = img_idx[top], anchor[top], s[top]
        b, p = boxes[img_idx, anchor], points[img_idx, anchor]
        keep = batched_nms(b, s, img_idx, self.nms_threshold)  # sorted by decreasing score
        b, s, p, img_idx = b[keep], s[keep], p[keep], img_idx[keep]
        return [(b[img_idx == i][: self.keep_top_k], s[img_idx == i][: self.keep_top_k],
                 p[img_idx == i][: self.keep_top_k]) for i in range(n)]


def variant_of(state_dict):
    """'resnet50' or 'mobilenet0.25' from the trunk's key names (after any `module.` prefix)."""
    keys = {k.removeprefix("module.") for k in state_dict}
    if "body.layer2.0.conv1.weight" in keys:
        return "resnet50"
    if "body.stage1.0.0.weight" in keys:
        return "mobilenet0.25"
    raise ValueError("not a RetinaFace state dict: neither body.layer2.* (ResNet-50) nor body.stage1.* "
                     "(MobileNet-0.25) keys found")


def load_retinaface(path, variant=None):
    """Build RetinaFace and load a biubug6-layout weight file strictly (`module.` prefix optional)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (optionally under 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace(variant or variant_of(state))
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: does not match RetinaFace-{model.variant}: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong[:5]} ({len(wrong)})")
    model.load_state_dict(state, strict=True)
    return model
