"""Fast SwAV multi-crop data path (paper App. A.1 recipe; issue 12): images decoded to uint8 tensors
by libjpeg-turbo (simplejpeg) or PIL (reduced-size JPEG decode where the crops allow), crop
parameters drawn for all crops at once, tensor crops, and the colour part (pretrain/fast_color.py)
run in the loader workers or, batched over the whole batch, on the training device after the
transfer (DeviceAugment).

Same augmentation as pretrain.data.MultiCropTransform, SwAV's recipe (anchors_frl_swav.md §2.6):
per crop RandomResizedCrop(size, scale, ratio (3/4, 4/3); torchvision's 10 attempts, then a centre
crop; bilinear with antialiasing, as PIL), flip p 0.5, then the colour distortion. The parameter
distributions are the same (tests/test_fast_multicrop.py); pixels differ from PIL's by its uint8
rounding after every op. A sample's augmentation is a function of its seed alone, as in
ImageDataset, so resumed and multi-process runs see the same crops.
"""
import io
import math
import os

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image

from common.files import rgb8
from pretrain.data import MEAN, STD, MultiCropTransform
from pretrain.fast_color import N_PARAMS, N_UNIFORMS, augment_color, color_params

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's default aspect range
ATTEMPTS = 10                   # RandomResizedCrop's tries before the centre crop
N_BOX_UNIFORMS = 2 * ATTEMPTS + 2


def crop_boxes(u: np.ndarray, height: int, width: int, scale_lo, scale_hi) -> np.ndarray:
    """n x 4 int64 RandomResizedCrop boxes (top, left, h, w) of a height x width image from u, n x
    N_BOX_UNIFORMS uniforms; scale_lo / scale_hi: per-crop area ranges. torchvision's rule: up to 10
    draws of area ~ U(scale) H W and log-aspect ~ U(log 3/4, log 4/3), w = round(sqrt(a r)),
    h = round(sqrt(a / r)); the first that fits is kept (position uniform), else the centre crop
    of the aspect clamped into the range."""
    n = u.shape[0]
    area = height * width * (scale_lo[:, None] + (scale_hi - scale_lo)[:, None] * u[:, 0:ATTEMPTS])
    ratio = np.exp(math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, ATTEMPTS:2 * ATTEMPTS])
    w, h = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))  # half to even, as round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(1)
    w, h = w[np.arange(n), first].astype(np.int64), h[np.arange(n), first].astype(np.int64)
    fw, fh = width, height  # centre-crop fallback
    if width / height < RATIO[0]:
        fh = int(round(width / RATIO[0]))
    elif width / height > RATIO[1]:
        fw = int(round(height * RATIO[1]))
    ok = fits.any(1)
    w, h = np.where(ok, w, fw), np.where(ok, h, fh)
    top = np.where(ok, (u[:, -2] * (height - h + 1)).astype(np.int64), (height - fh) // 2)
    left = np.where(ok, (u[:, -1] * (width - w + 1)).astype(np.int64), (width - fw) // 2)
    return np.stack([top, left, h, w], 1)


def _dct_factor(height: int, width: int, min_side: int) -> int:
    """The largest of 8, 4, 2 by which a JPEG's DCT-scaled decode keeps its shorter side >= min_side, else 1."""
    return next((f for f in (8, 4, 2) if min_side > 0 and min(height, width) // f >= min_side), 1)


def decode_image(data: bytes, *, min_side: int = 0):
    """(3 x h x w uint8 RGB tensor, (H, W) full size) from encoded bytes, or None when unreadable.
    A JPEG is decoded by libjpeg-turbo (simplejpeg), at 1/2, 1/4 or 1/8 size by DCT scaling while its
    shorter side stays >= ``min_side``; other formats, and JPEGs simplejpeg rejects, by PIL (DCT scaling
    of JPEGs via draft; 16-bit images keep their top 8 bits, as common.files.rgb8)."""
    if not data:
        return None
    if data[:2] == b"\xff\xd8":
        try:
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            factor = _dct_factor(height, width, min_side)
            img = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // factor),
                                         min_width=-(-width // factor))
            return torch.from_numpy(img).permute(2, 0, 1), (height, width)
        except ValueError:  # broken, truncated or unusual (e.g. arithmetic-coded): PIL below
            pass
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            factor = _dct_factor(height, width, min_side)
            if factor > 1:
                img.draft("RGB", (-(-width // factor), -(-height // factor)))  # a no-op for other formats
            img.load()
            pixels = np.array(rgb8(img))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1), (height, width)


def load_image(source, *, min_side: int = 0):
    """decode_image of a file path or binary file object; None when it is missing or unreadable."""
    try:
        if hasattr(source, "read"):
            return decode_image(source.read(), min_side=min_side)
        with open(source, "rb") as f:
            return decode_image(f.read(), min_side=min_side)
    except OSError:
        return None


def _size_runs(sizes) -> list:
    """(start, end) of the runs of consecutive equal sizes."""
    ends = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]] + [len(sizes)]
    return list(zip([0] + ends[:-1], ends))


class FastMultiCrop:
    """``counts[i]`` crops of ``sizes[i]`` px at scale ``scales[i]`` of a uint8 3 x H x W image, with
    MultiCropTransform's arguments. Returns the list of normalised float crops, or with
    ``defer_color`` the list of uint8 crops followed by their n_crops x N_PARAMS colour table
    (DeviceAugment finishes them on the training device)."""

    def __init__(self, *, sizes, counts, scales, color_strength: float = 1.0, jitter_p: float = 0.8,
                 grayscale_p: float = 0.2, blur_p: float = 0.5, mean=MEAN, std=STD, defer_color: bool = False):
        if not len(sizes) == len(counts) == len(scales):
            raise ValueError(f"multi-crop: sizes {sizes}, counts {counts}, scales {scales} differ in length")
        self.sizes = [int(s) for s, c in zip(sizes, counts) for _ in range(c)]
        self.scale_lo = np.array([float(sc[0]) for sc, c in zip(scales, counts) for _ in range(c)])
        self.scale_hi = np.array([float(sc[1]) for sc, c in zip(scales, counts) for _ in range(c)])
        self.color = dict(strength=color_strength, jitter_p=jitter_p, grayscale_p=grayscale_p, blur_p=blur_p)
        color_params(np.zeros((0, N_UNIFORMS)), **self.color)  # validates the strength
        self.mean, self.std, self.defer_color = tuple(mean), tuple(std), defer_color
        # the shorter source side at which every crop still has >= its output size in pixels
        # (w = sqrt(s A r) >= size for every s >= scale_lo, r >= 3/4): decoding smaller loses nothing
        self.min_source_side = max([math.ceil(s / math.sqrt(RATIO[0] * lo)) for s, lo in
                                    zip(self.sizes, self.scale_lo)], default=0)

    def load(self, source):
        """(uint8 image, full size) of a path or binary file object (ImageDataset calls it in place of
        load_rgb): reduced-size JPEG decode down to ``min_source_side``; None when unreadable."""
        return load_image(source, min_side=self.min_source_side)

    def sample_params(self, height: int, width: int) -> tuple:
        """(boxes n x 4 (top, left, h, w), flips n bools, colour n x N_PARAMS) from one draw of torch's RNG."""
        u = torch.rand(len(self.sizes), N_BOX_UNIFORMS + 1 + N_UNIFORMS, dtype=torch.float64).numpy()
        boxes = crop_boxes(u[:, :N_BOX_UNIFORMS], height, width, self.scale_lo, self.scale_hi)
        flips = u[:, N_BOX_UNIFORMS] < 0.5
        return boxes, flips, color_params(u[:, N_BOX_UNIFORMS + 1:], **self.color)

    def __call__(self, img, full_size=None) -> list:
        """img: 3 x h x w uint8 tensor, RGB PIL image, or ``load``'s (tensor, full size) pair; full_size:
        (H, W) of the original when img is a reduced decode (boxes are drawn on it, then scaled)."""
        if isinstance(img, tuple):
            img, full_size = img
        elif isinstance(img, Image.Image):
            img = torch.from_numpy(np.array(rgb8(img))).permute(2, 0, 1)
        height, width = full_size or tuple(img.shape[1:])
        boxes, flips, color = self.sample_params(height, width)
        if (height, width) != tuple(img.shape[1:]):
            scale = np.array([img.shape[1] / height, img.shape[2] / width] * 2)
            corners = np.round(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1) * scale).astype(np.int64)
            boxes = np.concatenate([corners[:, :2], np.maximum(corners[:, 2:] - corners[:, :2], 1)], 1)
        src = img.unsqueeze(0)
        crops = []
        for (top, left, h, w), flip, size in zip(boxes.tolist(), flips.tolist(), self.sizes):  # one image's crops
            region = src[:, :, top:top + h, left:left + w].contiguous(memory_format=torch.channels_last)
            crop = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            crops.append(crop.flip(-1) if flip else crop)
        color = torch.from_numpy(color)
        if self.defer_color:
            return crops + [color]
        out = []
        for start, end in _size_runs(self.sizes):
            x = augment_color(torch.stack(crops[start:end]), color[start:end], mean=self.mean, std=self.std)
            out += list(x.unbind(0))
        return out


class DeviceAugment:
    """The device half of FastMultiCrop(defer_color=True): moves a collated batch (uint8 crop batches,
    then the B x n_crops x N_PARAMS table) to ``device`` and runs colour, grey, blur and normalisation
    there, one batched call per crop size; returns the float crops in ``memory_format``."""

    def __init__(self, *, mean=MEAN, std=STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch: list, device, memory_format=torch.contiguous_format) -> list:
        *crops, params = batch
        params = params.to(device, non_blocking=True)
        n, out = crops[0].shape[0], []
        for start, end in _size_runs([c.shape[-1] for c in crops]):
            x = torch.cat([c.to(device, non_blocking=True) for c in crops[start:end]])  # crop-major rows
            p = params[:, start:end].transpose(0, 1).reshape(-1, N_PARAMS)
            x = augment_color(x, p, mean=self.mean, std=self.std).contiguous(memory_format=memory_format)
            out += list(x.split(n))
        return out


def build_transform(pipeline: str, *, sizes, counts, scales, color_strength: float, color_on: str,
                    device_type: str) -> tuple:
    """(multi-crop transform, DeviceAugment or None) for data.pipeline ``fast`` (FastMultiCrop) or
    ``pil`` (the reference MultiCropTransform); color_on: ``worker``, ``device`` or ``auto`` (the
    device when it is CUDA, else the workers)."""
    if color_on not in ("auto", "worker", "device"):
        raise ValueError(f"aug.color_on={color_on!r}: expected 'auto', 'worker' or 'device'")
    kw = dict(sizes=sizes, counts=counts, scales=scales, color_strength=color_strength)
    if pipeline == "pil":
        return MultiCropTransform(**kw), None
    if pipeline != "fast":
        raise ValueError(f"data.pipeline={pipeline!r}: expected 'fast' or 'pil'")
    on_device = color_on == "device" or (color_on == "auto" and device_type == "cuda")
    return FastMultiCrop(**kw, defer_color=on_device), DeviceAugment() if on_device else None


def resolve_num_workers(num_workers: int, max_workers: int = 16) -> int:
    """data.num_workers, or for -1: the cores this process may use, shared among the node's training
    processes (torchrun's LOCAL_WORLD_SIZE), less one for the training process, at most ``max_workers``."""
    if num_workers >= 0:
        return num_workers
    if num_workers != -1:
        raise ValueError(f"data.num_workers={num_workers}: expected >= 0, or -1 for one per free core")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(per_process - 1, max_workers))
