"""The face-detector interface (paper App. A.1, App. C: detect, then crop), used by pretrain/curate and
au_intensity/boxes.py."""
from abc import ABC, abstractmethod

import numpy as np
import torch


def as_chw_float(image, device):
    """An RGB (H, W, 3) uint8 array / tensor / PIL image as a (3, H, W) float32 tensor in 0..255."""
    t = torch.as_tensor(np.array(image) if not torch.is_tensor(image) else image)
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {tuple(t.shape)}")
    return t.permute(2, 0, 1).to(device=device, dtype=torch.float32)


class Detector(ABC):
    """Base class: `detect(images)` -> one (boxes (n, 4) x1 y1 x2 y2, scores (n,), points (n, 5, 2))
    per image, float32 CPU tensors in the image's pixel coordinates, by decreasing score.

    images: RGB (H, W, 3) uint8 arrays, tensors or PIL images. Same-sized images go through the
    network together; subclasses implement `_detect_batch((B, 3, H, W) float 0..255)`.
    Points: left eye, right eye (as seen in the image), nose, left and right mouth corner.
    """

    device = torch.device("cpu")

    @abstractmethod
    def _detect_batch(self, imgs):
        """(B, 3, H, W) float RGB 0..255 -> B tuples (boxes, scores, points) as in `detect`."""

    def detect(self, images):
        tensors = [as_chw_float(im, self.device) for im in images]
        results = [None] * len(tensors)
        by_shape = {}
        for i, t in enumerate(tensors):
            by_shape.setdefault(tuple(t.shape), []).append(i)
        for idx in by_shape.values():
            with torch.no_grad():
                batch = self._detect_batch(torch.stack([tensors[i] for i in idx]))
            for i, (boxes, scores, points) in zip(idx, batch):
                order = scores.argsort(descending=True)
                results[i] = tuple(r[order].float().cpu() for r in (boxes, scores, points))
        return results
