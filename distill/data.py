"""Unlabelled face crops for self-distillation (paper §3.5), augmented as the labelled ones (App. A.2).

Items have exactly the fields of ``landmarks.data.LandmarkDataset`` items, so labelled and
unlabelled faces mix in one batch (``torch.utils.data.ConcatDataset``): the points are NaN (no
label; ``render_heatmaps`` gives them all-zero maps and ``distill.teacher`` tells the two apart by
them). An image that cannot be decoded gives ``valid=False``: the loss skips it and the training
loop counts it (DESIGN.md "Bad input").
"""
import math

import numpy as np
import torch

from common.face_crop import whole_image_box
from common.transforms import crop_from_box, warp_image
from landmarks.data import IMAGENET_MEAN, IMAGENET_STD, read_image


class UnlabelledDataset(torch.utils.data.Dataset):
    """Crops of pool images: ``boxes[i]`` (x1, y1, x2, y2) enlarged by ``box_scale`` like a labelled
    crop, or, where the box is NaN, the whole image as it is (a face crop already)."""

    def __init__(self, paths, boxes, *, n_points, input_size, box_scale, augment=None, color_scale=0.0,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.paths, self.boxes = list(paths), np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(self.paths) != len(self.boxes):
            raise ValueError(f"{len(self.paths)} pool paths but {len(self.boxes)} boxes")
        self.n_points, self.input_size, self.box_scale = n_points, input_size, box_scale
        self.augment, self.color_scale = augment, color_scale
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self):
        return len(self.paths)

    def crop_matrix(self, i, height, width):
        box = self.boxes[i]
        if np.isnan(box).any():
            return crop_from_box(whole_image_box(height, width), self.input_size, 1.0)
        return crop_from_box(box, self.input_size, self.box_scale)

    def __getitem__(self, i):
        s = self.input_size
        raw = read_image(self.paths[i])
        matrix = self.crop_matrix(i, *(raw.shape[-2:] if raw is not None else (s, s)))
        if self.augment is not None:
            aug, _ = self.augment.sample_matrix((s, s))       # a flip needs no permutation: no points
            matrix = aug @ matrix
        image = torch.zeros(3, s, s) if raw is None else warp_image(raw.float() / 255.0, matrix, s)
        if self.color_scale > 0:
            gain = 1.0 + self.color_scale * (2.0 * torch.rand(3, 1, 1) - 1.0)
            image = (image * gain).clamp(0.0, 1.0)
        return {"image": (image - self.mean) / self.std,
                "points": torch.full((self.n_points, 2), math.nan, dtype=torch.float32),
                "matrix": matrix, "index": i, "valid": raw is not None}


def labelled_mask(points):
    """(N,) bool: which items of a batch carry landmarks (unlabelled items have only NaN points)."""
    return torch.isfinite(points).flatten(1).any(dim=1)
