"""Unlabelled face crops for self-distillation (paper §3.5), augmented as the labelled ones (App. A.2).

Items have exactly the fields of ``landmarks.data.LandmarkDataset`` items, so labelled and
unlabelled faces mix in one batch (``torch.utils.data.ConcatDataset``): the points are NaN (no
label; ``render_heatmaps`` gives them all-zero maps and ``distill.teacher`` tells the two apart by
them). An image that cannot be decoded gives ``valid=False``: ``common.engine`` drops it from the batch
and counts it (DESIGN.md "Bad input"). ``distillation_set`` assembles a run's labelled + unlabelled set.
"""
import math

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from common.face_crop import whole_image_box
from common.finetune import select_training_keys
from common.logger import log
from common.transforms import crop_from_box, warp_image
from distill.leakage import checked_pool
from distill.pool import take
from landmarks import formats
from landmarks.data import IMAGENET_MEAN, IMAGENET_STD, LandmarkDataset, read_image, train_augment


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


def distillation_set(cfg, *, out_dir):
    """(labelled split, its few-shot subset (App. A.3, saved to ``out_dir``), the leak-checked unlabelled pool
    entries (§3.5), the augmented training set over both) of a self-distillation run's config."""
    data, aug = cfg.data, cfg.aug
    n_points = formats.N_POINTS[data.dataset]
    full = formats.load_split(data.dataset, data.root, data.train_split, data.box)
    labelled = full.select(select_training_keys(full.keys, fraction=data.fraction, seed=data.subset_seed,
                                                subset_file=data.subset_file, out_dir=out_dir))
    entries = checked_pool(list_path=cfg.unlabeled.list, dataset=data.dataset, root=data.root,
                           exclude=cfg.unlabeled.exclude)
    unlabelled, wanted = take(entries, amount=cfg.unlabeled.amount, reference_size=len(full), seed=cfg.unlabeled.seed)
    if wanted is not None and wanted > len(unlabelled):
        log(f"warning: unlabeled.amount={cfg.unlabeled.amount} asks for {wanted} images; "
            f"the pool has {len(unlabelled)}")
    augment = train_augment(rotation=aug.rotation, scale=aug.scale, flip_prob=aug.flip_prob, n_points=n_points)
    crops = dict(input_size=data.input_size, box_scale=data.box_scale, augment=augment, color_scale=aug.color_scale)
    train_set = ConcatDataset([LandmarkDataset(labelled, **crops),
                               UnlabelledDataset(unlabelled.paths, unlabelled.boxes, n_points=n_points, **crops)])
    return full, labelled, unlabelled, train_set
