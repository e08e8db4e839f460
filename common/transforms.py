"""Geometric and photometric augmentation that moves landmarks with the image (paper App. A).

Pixel convention (used by every function here and by ``common.alignment``): continuous
0-based coordinates in which pixel ``(row i, column j)`` has its centre at ``(x=j, y=i)`` and
covers ``[j-0.5, j+0.5] x [i-0.5, i+0.5]``. This is OpenCV's ``warpAffine`` convention, so
insightface's alignment template applies unchanged, and it is the "one 0-based continuous
convention" recommended in shared/research/anchors_landmarks_3d.md §3.3.

Every geometric op is a 3x3 float64 homogeneous matrix mapping ORIGINAL pixel coordinates to
OUTPUT pixel coordinates (2x3 matrices are accepted and promoted). Ops are composed as
matrices, the image is resampled ONCE by ``warp_image`` (bilinear ``grid_sample`` with
``align_corners=False``, which is exactly this convention) and points are mapped by
``apply_to_points`` with the same matrix.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from common.landmark_schemes import flip_permutation


def as_matrix(m):
    """``m`` (..., 2|3, 3) as a float64 (..., 3, 3) homogeneous matrix."""
    t = torch.as_tensor(m, dtype=torch.float64)
    if t.shape[-2:] == (2, 3):
        last = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=t.device)
        last = last.expand(*t.shape[:-2], 1, 3)
        t = torch.cat([t, last], dim=-2)
    if t.dim() < 2 or t.shape[-2:] != (3, 3):
        raise ValueError(f"expected an affine matrix of shape (..., 2|3, 3), got {tuple(t.shape)}")
    return t


def compose(*matrices):
    """The matrix that applies ``matrices`` in the given order (first argument first)."""
    if not matrices:
        raise ValueError("compose() needs at least one matrix")
    out = as_matrix(matrices[0])
    for m in matrices[1:]:
        out = as_matrix(m) @ out
    return out


def invert(matrix):
    """Inverse of an affine matrix (..., 3, 3), in float64."""
    return torch.linalg.inv(as_matrix(matrix))


def apply_to_points(matrix, pts):
    """Map points (..., P, 2) with ``matrix`` (..., 3, 3); computed in float64.

    A floating-point tensor keeps its dtype; anything else (lists, arrays, integer tensors)
    comes back as float64. NaN points (missing landmarks) stay NaN.
    """
    p = pts if isinstance(pts, torch.Tensor) else torch.as_tensor(pts, dtype=torch.float64)
    if p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., P, 2), got {tuple(p.shape)}")
    m = as_matrix(matrix).to(p.device)
    out = p.to(torch.float64) @ m[..., :2, :2].transpose(-1, -2) + m[..., None, :2, 2]
    return out.to(p.dtype) if p.is_floating_point() else out


def translation(tx, ty):
    """x' = x + tx, y' = y + ty."""
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rotation_scale(angle_deg, scale=1.0, center=(0.0, 0.0)):
    """Rotate by ``angle_deg`` (positive = anticlockwise on screen, y pointing down) and scale
    by ``scale``, both about ``center``."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    rs = torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return translation(*center) @ rs @ translation(-center[0], -center[1])


def hflip(width):
    """Horizontal mirror of an image ``width`` pixels wide: column j <-> column width-1-j."""
    return torch.tensor([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


def resize(in_hw, out_hw):
    """Matrix of a plain resize from ``in_hw`` to ``out_hw`` pixels: u = (x+0.5)*w/W - 0.5.

    E.g. a 256 crop to its 64x64 heatmap gives u = (x+0.5)/4 - 0.5 (anchors_landmarks_3d §3.3).
    """
    sy, sx = out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


def crop_from_box(box, out_size, scale=1.0, *, offset=(0.0, 0.0)):
    """Matrix mapping a face box to a square ``out_size`` x ``out_size`` crop.

    box: (..., 4) as (x1, y1, x2, y2) in the pixel convention above. The crop is the square of
    side ``max(w, h) * scale`` centred on the box centre moved by ``offset`` (fractions of the
    box width/height; FAN's detector-box recipe is ``offset=(0, -0.12)``, anchors_landmarks_3d
    §3.1); its outer edges map to the crop's outer pixel edges (-0.5 and out_size-0.5).
    Batched boxes give (..., 3, 3) matrices.
    """
    b = torch.as_tensor(box, dtype=torch.float64)
    if b.shape[-1] != 4:
        raise ValueError(f"box must have shape (..., 4) as x1, y1, x2, y2; got {tuple(b.shape)}")
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    side = torch.maximum(w, h) * scale
    if not bool((side > 0).all()):
        raise ValueError(f"box has no positive extent (after scale={scale}): {b.tolist()}")
    cx = (b[..., 0] + b[..., 2]) / 2 + offset[0] * w
    cy = (b[..., 1] + b[..., 3]) / 2 + offset[1] * h
    s = out_size / side
    m = torch.zeros(*b.shape[:-1], 3, 3, dtype=torch.float64)
    m[..., 0, 0], m[..., 1, 1], m[..., 2, 2] = s, s, 1.0
    m[..., 0, 2] = out_size / 2 - 0.5 - s * cx
    m[..., 1, 2] = out_size / 2 - 0.5 - s * cy
    return m


def _normaliser(h, w):
    """Pixel coordinates -> grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def warp_image(img, matrix, out_size, *, padding_mode="zeros"):
    """Resample ``img`` (C, H, W) or (N, C, H, W) so that output pixel u shows input point
    invert(matrix) @ u; bilinear, one pass. ``matrix``: (3, 3) or (N, 3, 3); ``out_size``: int
    or (h, w). ``padding_mode`` is grid_sample's ("zeros", "border", "reflection").
    Integer images are warped in float32 and rounded back to their dtype."""
    if img.dim() not in (3, 4):
        raise ValueError(f"image must be (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    batched = img.dim() == 4
    x = img if batched else img[None]
    work = x if x.is_floating_point() else x.float()
    m = as_matrix(matrix).cpu()
    theta = _normaliser(*x.shape[-2:]) @ torch.linalg.inv(m) @ torch.linalg.inv(_normaliser(oh, ow))
    theta = theta.expand(x.shape[0], 3, 3) if theta.dim() == 2 else theta
    if theta.shape[0] != x.shape[0]:
        raise ValueError(f"{theta.shape[0]} matrices for a batch of {x.shape[0]} images")
    theta = theta[:, :2].to(dtype=work.dtype, device=work.device)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], oh, ow], align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if not x.is_floating_point():
        info = torch.iinfo(x.dtype)
        out = out.round().clamp(info.min, info.max).to(x.dtype)
    return out if batched else out[0]


@dataclass(frozen=True)
class AffineParams:
    """One draw of the random geometric augmentation."""
    angle_deg: float
    scale: float
    translate: tuple  # (fx, fy), fractions of the output width / height
    flip: bool


def random_affine_params(rng, rotation_deg, scale_range, translate_frac, flip_prob, *,
                         rotation_prob=1.0):
    """Draw ``AffineParams``: angle ~ U(±rotation_deg) with probability ``rotation_prob`` (else 0),
    scale ~ U(scale_range), translation ~ U(±translate_frac) per axis, flip ~ Bernoulli(flip_prob).

    ``rng`` is a ``torch.Generator`` or None (torch's global RNG, which DataLoader seeds per
    worker). Always consumes 6 numbers, so the stream does not depend on the outcome.
    """
    u = torch.rand(6, generator=rng, dtype=torch.float64).tolist()
    angle = (2 * u[0] - 1) * rotation_deg if u[1] < rotation_prob else 0.0
    lo, hi = scale_range
    shift = ((2 * u[3] - 1) * translate_frac, (2 * u[4] - 1) * translate_frac)
    return AffineParams(angle_deg=angle, scale=lo + (hi - lo) * u[2], translate=shift,
                        flip=u[5] < flip_prob)


def affine_from_params(params, out_hw):
    """Matrix of ``params`` acting on an (h, w) image: flip, then rotate + scale about the image
    centre, then translate."""
    h, w = out_hw
    center = ((w - 1) / 2, (h - 1) / 2)
    m = rotation_scale(params.angle_deg, params.scale, center)
    m = translation(params.translate[0] * w, params.translate[1] * h) @ m
    return m @ hflip(w) if params.flip else m


class LandmarkAugment:
    """Random flip / rotation / scale / translation applied to an image and its landmarks.

    The augmentation acts in the output frame (e.g. the 256 crop): an optional ``matrix``
    (such as ``crop_from_box``) is composed first, so the image is resampled once. A flip
    mirrors x and permutes point indices with ``flip_permutation(n_points)``.
    Paper App. A, landmarks / AU / emotion: rotation=30, scale=(0.85, 1.15), flips; 3D:
    rotation=45, scale=(0.85, 1.15), translation=0.1. HRNet's recipe (anchors_landmarks_3d
    §3.1): rotation=30, rotation_prob=0.6, scale=(0.75, 1.25), flip_prob=0.5.
    """

    def __init__(self, *, rotation=0.0, scale=(1.0, 1.0), translation=0.0, flip_prob=0.0,
                 n_points=None, rotation_prob=1.0, padding_mode="zeros"):
        if flip_prob > 0 and n_points is None:
            raise ValueError("LandmarkAugment: flip_prob > 0 needs n_points (flip permutation)")
        self.rotation, self.scale, self.translation = rotation, tuple(scale), translation
        self.flip_prob, self.rotation_prob = flip_prob, rotation_prob
        self.padding_mode = padding_mode
        self.perm = torch.tensor(flip_permutation(n_points)) if n_points is not None else None

    def sample_matrix(self, out_hw, generator=None):
        """(augmentation matrix in the output frame, whether it flips)."""
        p = random_affine_params(generator, self.rotation, self.scale, self.translation,
                                 self.flip_prob, rotation_prob=self.rotation_prob)
        return affine_from_params(p, out_hw), p.flip

    def __call__(self, image, landmarks, *, matrix=None, out_size=None, generator=None):
        """image (C, H, W); landmarks (P, 2+K): x, y are transformed, extra columns (e.g. a
        visibility flag) are only permuted. ``out_size`` (int or (h, w)) defaults to the
        image size. Returns (image, landmarks) in the output frame."""
        out_hw = tuple(image.shape[-2:]) if out_size is None else (
            (out_size, out_size) if isinstance(out_size, int) else tuple(out_size))
        aug, flipped = self.sample_matrix(out_hw, generator)
        total = aug if matrix is None else aug @ as_matrix(matrix)
        lm = torch.as_tensor(landmarks)
        xy = apply_to_points(total, lm[..., :2])
        lm = torch.cat([xy, lm[..., 2:].to(xy.dtype)], dim=-1) if lm.shape[-1] > 2 else xy
        if flipped:
            if lm.shape[-2] != len(self.perm):
                raise ValueError(f"{lm.shape[-2]} landmarks but the flip permutation "
                                 f"has {len(self.perm)}")
            lm = lm[..., self.perm, :]
        return warp_image(image, total, out_hw, padding_mode=self.padding_mode), lm


def _factor_range(value, name, center=1.0, bound=None):
    lo, hi = (center - value, center + value) if isinstance(value, (int, float)) else value
    lo = max(lo, 0.0) if center == 1.0 else lo
    if lo > hi or (bound is not None and (lo < -bound or hi > bound)):
        raise ValueError(f"ColorJitter: bad {name} range {(lo, hi)}")
    return float(lo), float(hi)


class ColorJitter:
    """Random brightness / contrast / saturation / hue, in a random order, on float RGB tensors
    in [0, 1] of shape (..., 3, H, W) (torchvision.transforms.v2 functional ops).
    A number v means factor ~ U(max(0, 1-v), 1+v) (hue: shift ~ U(-v, v), v <= 0.5);
    a pair gives the range explicitly."""

    def __init__(self, *, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.ranges = [(TF.adjust_brightness, _factor_range(brightness, "brightness")),
                       (TF.adjust_contrast, _factor_range(contrast, "contrast")),
                       (TF.adjust_saturation, _factor_range(saturation, "saturation")),
                       (TF.adjust_hue, _factor_range(hue, "hue", center=0.0, bound=0.5))]

    def __call__(self, img, generator=None):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        order = torch.randperm(4, generator=generator).tolist()
        for i in order:
            op, (lo, hi) = self.ranges[i]
            if lo != hi or lo != (0.0 if op is TF.adjust_hue else 1.0):
                img = op(img, lo + (hi - lo) * u[i])
        return img


def gaussian_blur(img, sigma=None, kernel_size=None):
    """Gaussian blur, reflect padding. Give ``sigma`` (px; kernel 2*ceil(3*sigma)+1) or an odd
    ``kernel_size`` (sigma = 0.15*(k-1) + 0.5, OpenCV's rule, as torchvision uses)."""
    if (sigma is None) == (kernel_size is None):
        raise ValueError("gaussian_blur: give exactly one of sigma and kernel_size")
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * sigma) + 1
    elif kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur: kernel_size must be odd and positive, got {kernel_size}")
    else:
        sigma = 0.15 * (kernel_size - 1) + 0.5
    return TF.gaussian_blur(img, kernel_size=[kernel_size] * 2, sigma=[sigma, sigma])


class GaussianBlur:
    """With probability ``p``, blur with sigma ~ U(sigma) px, or with an odd kernel size drawn
    uniformly from ``kernel_size`` = (lo, hi). Paper App. A (AU intensity): kernel size between
    5 and 10 px with probability 0.4, i.e. ``GaussianBlur(kernel_size=(5, 10), p=0.4)``."""

    def __init__(self, *, sigma=None, kernel_size=None, p=1.0):
        if (sigma is None) == (kernel_size is None):
            raise ValueError("GaussianBlur: give exactly one of sigma and kernel_size")
        rng = sigma if sigma is not None else kernel_size
        if not 0 < rng[0] <= rng[1]:
            raise ValueError(f"GaussianBlur: range must satisfy 0 < lo <= hi, got {rng}")
        self.sigma = tuple(sigma) if sigma is not None else None
        self.sizes = None if kernel_size is None else list(range(
            kernel_size[0] + 1 - kernel_size[0] % 2, int(kernel_size[1]) + 1, 2))
        if self.sizes == []:
            raise ValueError(f"GaussianBlur: no odd kernel size in {kernel_size}")
        self.p = p

    def __call__(self, img, generator=None):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        if u[0] >= self.p:
            return img
        if self.sizes is not None:
            return gaussian_blur(img, kernel_size=self.sizes[int(u[1] * len(self.sizes))])
        return gaussian_blur(img, self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[1])
