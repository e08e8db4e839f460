"""Face-box crops with the fine-tuning augmentation of paper App. A.2 (AU intensity, emotion).

App. A.2: random rotation (±30°), horizontal flip, scale jitter (0.85-1.15), colour jitter and, for
AU intensity only, Gaussian blur (kernel 5-10 px, p 0.4); images are normalised as the backbone
was pre-trained (SwAV/FRL mean and std, anchors_frl_swav.md §2.6). The crop and the random
affine are composed into one matrix, so each image is resampled once (``common.transforms``).
Unreadable images give ``None``; loaders drop and count them (DESIGN.md "Bad input").
"""
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from common.files import rgb8
from common.transforms import (ColorJitter, GaussianBlur, affine_from_params, crop_from_box,
                               random_affine_params, warp_image)

MEAN = (0.485, 0.456, 0.406)
STD = (0.228, 0.224, 0.225)


def read_rgb(path):
    """uint8 tensor (3, H, W) of the image at ``path``, or None when it is missing or undecodable."""
    try:
        with Image.open(path) as im:
            array = np.asarray(rgb8(im))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def readable(path):
    """True when ``path`` opens as an image (header only: fast enough for a whole-dataset check)."""
    try:
        with Image.open(path):
            return True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False


def whole_image_box(height, width):
    """The box (x1, y1, x2, y2) of a whole ``height`` x ``width`` image (outer pixel edges)."""
    return (-0.5, -0.5, width - 0.5, height - 0.5)


class FaceCrop:
    """Square crop of ``size`` px around a face box (side = longest box side x ``box_scale``).

    With ``train=True`` it also applies, in this order: a random flip / rotation / scale about the
    crop centre (one warp with the crop), colour jitter (brightness, contrast, saturation = ``jitter``,
    hue = ``jitter_hue``), Gaussian blur with an odd kernel in ``blur_kernel`` with probability
    ``blur_p``. Output: float (3, size, size), normalised with ``mean`` / ``std``.
    """

    def __init__(self, *, size, box_scale, train, rotation=30.0, scale=(0.85, 1.15), flip_prob=0.5,
                 jitter=0.4, jitter_hue=0.1, blur_p=0.0, blur_kernel=(5, 10), mean=MEAN, std=STD):
        self.size, self.box_scale, self.train = int(size), float(box_scale), bool(train)
        self.rotation, self.scale, self.flip_prob = float(rotation), tuple(scale), float(flip_prob)
        self.jitter = ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter_hue)
        self.blur = GaussianBlur(kernel_size=tuple(blur_kernel), p=blur_p) if blur_p > 0 else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def matrix(self, box, generator=None):
        """The 3x3 matrix from image pixels to crop pixels (random part drawn when training)."""
        m = crop_from_box(box, self.size, self.box_scale)
        if self.train:
            p = random_affine_params(generator, self.rotation, self.scale, 0.0, self.flip_prob)
            m = affine_from_params(p, (self.size, self.size)) @ m
        return m

    def __call__(self, image, box=None, generator=None):
        """``image`` uint8 (3, H, W); ``box`` (x1, y1, x2, y2) or None for the whole image."""
        if box is None:
            box = whole_image_box(*image.shape[-2:])
        out = warp_image(image.float().div_(255.0), self.matrix(box, generator), self.size)
        if self.train:
            out = self.jitter(out.clamp_(0.0, 1.0), generator)
            if self.blur is not None:
                out = self.blur(out, generator)
        return (out - self.mean) / self.std
