"""MTCNN face detector (Zhang et al. 2016, arXiv:1604.02878) in plain PyTorch: the detect step of
the Flickr-Face recipe (paper App. C) when RetinaFace weights are not at hand, and the face boxes of
the AU-intensity frames (au_intensity/boxes.py).

The three networks take the P/R/O-Net weight files shipped in the facenet-pytorch 2.6.0 wheel
(`facenet_pytorch/data/{pnet,rnet,onet}.pt`, converted from the authors' Caffe models; fetched and
loaded by mtcnn_weights.py). Their layout fixes two conventions used here: images are fed as NCHW
without the Caffe transpose, and the dense layers of R/O-Net read the conv features flattened in
(W, H, C) order; the O-Net landmark output is 5 x-offsets then 5 y-offsets, relative to the box
it was given.

The cascade (all boxes x1 y1 x2 y2 in 0-based continuous pixel coordinates where pixel i spans
[i, i + 1), the convention of torchvision's roi_align(aligned=True); subtract 0.5 for the
pixel-centres-at-integers convention of common/transforms.py):
  1. P-Net slides over an image pyramid (scale 12/min_face, times `factor` per level, down to a
     12-pixel short side); each output cell is a 12x12 window at stride 2. Cells with face
     probability >= t1 become boxes; NMS 0.5 within a scale, 0.7 across scales; box regression;
     boxes are squared about their centres.
  2. R-Net scores 24x24 crops (zero outside the image); keep >= t2, NMS 0.7, regression, square.
  3. O-Net scores 48x48 crops and gives 5 points; keep >= t3, regression, NMS 0.7 measured as
     intersection over the smaller box ("Min").
Same-sized images run as one batch through every stage (crops via torchvision roi_align).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from common.face_detect.base import Detector

MEAN, SCALE = 127.5, 0.0078125  # the Caffe models' input normalisation: (x - 127.5) / 128


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field at stride 2."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets dx1 dy1 dx2 dy2

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)  # (N, h, w), (N, 4, h, w)


class RNet(nn.Module):
    """Refine net on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # (W, H, C) flatten order
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box offsets and 5 landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _regress(boxes, offsets):
    """Apply MTCNN box regression: each side moves by its offset times the box width/height."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def _square(boxes):
    """Grow each box to a square of side max(w, h) about the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], 1)


def nms_min(boxes, scores, groups, threshold):
    """Greedy NMS where overlap = intersection / area of the smaller box; indices kept, by score."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = boxes.max() - boxes.min() + 1  # separate the groups (images) in space
    b = boxes + (groups.to(boxes) * shift)[:, None]
    order = scores.argsort(descending=True)
    b = b[order]
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = (b[:, 2:] - b[:, :2]).prod(1)
    overlap = (inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9) > threshold).cpu()  # n x n
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in range(len(b)):  # sequential by nature; only the few O-Net survivors get here
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class MTCNN(Detector):
    """Three-stage MTCNN cascade behind the `Detector` interface (base.py)."""

    def __init__(self, pnet, rnet, onet, *, min_face=20.0, factor=0.709, thresholds=(0.6, 0.7, 0.7),
                 device="cpu"):
        self.pnet, self.rnet, self.onet = (n.eval().to(device) for n in (pnet, rnet, onet))
        self.min_face, self.factor, self.thresholds = float(min_face), float(factor), tuple(thresholds)
        self.device = torch.device(device)

    def _pyramid(self, h, w):
        scales, scale = [], 12.0 / self.min_face
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _stage1(self, imgs):
        n, _, h, w = imgs.shape
        boxes, scores, groups = [], [], []
        for scale in self._pyramid(h, w):
            hs, ws = int(h * scale + 1), int(w * scale + 1)
            prob, reg = self.pnet((F.interpolate(imgs, size=(hs, ws), mode="area") - MEAN) * SCALE)
            b, y, x = (prob >= self.thresholds[0]).nonzero(as_tuple=True)
            cell = torch.stack([x, y], 1).to(imgs) * 2  # top-left of each 12x12 window (scaled image)
            sxy = torch.tensor([ws / w, hs / h], device=imgs.device)
            box = torch.cat([cell / sxy, (cell + 12) / sxy], 1)
            box = torch.cat([box, reg[b, :, y, x]], 1)  # regression applied after the NMS
            keep = batched_nms(box[:, :4], prob[b, y, x], b, 0.5)
            boxes.append(box[keep]), scores.append(prob[b, y, x][keep]), groups.append(b[keep])
        if not boxes:
            return imgs.new_zeros(0, 4), imgs.new_zeros(0), torch.zeros(0, dtype=torch.long, device=imgs.device)
        boxes, scores, groups = torch.cat(boxes), torch.cat(scores), torch.cat(groups)
        keep = batched_nms(boxes[:, :4], scores, groups, 0.7)
        boxes, scores, groups = boxes[keep], scores[keep], groups[keep]
        return _square(_regress(boxes[:, :4], boxes[:, 4:])), scores, groups

    @staticmethod
    def _crops(imgs, boxes, groups, size):
        rois = torch.cat([groups[:, None].to(boxes), boxes], 1)
        patches = roi_align(imgs, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return (patches - MEAN) * SCALE  # outside the image roi_align gives 0, i.e. black padding

    def _detect_batch(self, imgs):
        """imgs: (B, 3, H, W) float 0..255 of one size -> per-image (boxes, scores, points)."""
        boxes, scores, groups = self._stage1(imgs)
        if len(boxes):
            prob, reg = self.rnet(self._crops(imgs, boxes, groups, 24))
            ok = prob >= self.thresholds[1]
            boxes, prob, reg, groups = boxes[ok], prob[ok], reg[ok], groups[ok]
            keep = batched_nms(boxes, prob, groups, 0.7)
            boxes, scores, groups = _square(_regress(boxes[keep], reg[keep])), prob[keep], groups[keep]
        points = imgs.new_zeros(0, 5, 2)
        if len(boxes):
            prob, reg, marks = self.onet(self._crops(imgs, boxes, groups, 48))
            ok = prob >= self.thresholds[2]
            boxes, scores, reg, marks, groups = boxes[ok], prob[ok], reg[ok], marks[ok], groups[ok]
            wh = boxes[:, 2:] - boxes[:, :2]
            points = boxes[:, None, :2] + torch.stack([marks[:, :5], marks[:, 5:]], 2) * wh[:, None]
            boxes = _regress(boxes, reg)
            keep = nms_min(boxes, scores, groups, 0.7)
            boxes, scores, points, groups = boxes[keep], scores[keep], points[keep], groups[keep]
        return [(boxes[groups == i], scores[groups == i], points[groups == i]) for i in range(len(imgs))]
