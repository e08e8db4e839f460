"""Batched colour distortion of SwAV's multi-crop (paper App. A.1; issue 12): parameter draws and the
jitter / grey / blur / normalise ops on N x 3 x H x W tensors, each crop with its own parameters.

Parameters follow SwAV's recipe as pretrain.data.MultiCropTransform applies it (torchvision v1,
anchors_frl_swav.md §2.6): RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p 0.8) with the 4 ops
in a uniformly random order, RandomGrayscale(0.2), Gaussian blur with p 0.5 and sigma ~ U(0.1, 2)
(PIL's radius is the Gaussian's standard deviation). The ops are torchvision's tensor definitions
(_blend with clamping, grey = 0.2989 R + 0.587 G + 0.114 B, HSV hue rotation, Gaussian kernel of
2 ceil(3 sigma) + 1 taps with reflect padding), computed in float32. A crop's parameters are one
row of an N x N_PARAMS table, so the ops can run in a loader worker on one image's crops or on
the training device over a whole batch, with the same result.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

BRIGHT, CONTRAST, SAT, HUE = 0, 1, 2, 3        # jitter factors (hue: shift in turns)
ORDER = 4                                      # 4 columns: the op (0-3 as above) at step k; -1: no jitter
GRAY, BLUR, SIGMA = 8, 9, 10                   # grey and blur flags (0 / 1), blur sigma
N_PARAMS = 11
N_UNIFORMS = 12                                # uniforms consumed per crop by color_params
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)          # torchvision rgb_to_grayscale


def color_params(u: np.ndarray, *, strength: float = 1.0, jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 blur_p: float = 0.5, sigma=(0.1, 2.0)) -> np.ndarray:
    """n x N_PARAMS float32 parameters from u, n x N_UNIFORMS uniforms in [0, 1): brightness, contrast,
    saturation factors ~ U(max(0, 1 - 0.8s), 1 + 0.8s), hue shift ~ U(-0.2s, 0.2s), the 4 ops in a
    uniform random order (all -1 when the jitter, p ``jitter_p``, is off), grey flag (p
    ``grayscale_p``), blur flag (p ``blur_p``) and sigma ~ U(sigma)."""
    if not 0.0 <= 0.2 * strength <= 0.5:
        raise ValueError(f"color strength {strength}: the hue range 0.2 s must lie in [0, 0.5]")
    lo, hi = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
    out = np.empty((u.shape[0], N_PARAMS), np.float32)
    out[:, BRIGHT:HUE] = lo + (hi - lo) * u[:, 0:3]
    out[:, HUE] = 0.2 * strength * (2.0 * u[:, 3] - 1.0)
    order = np.argsort(u[:, 4:8], axis=1)  # the ranks of 4 iid uniforms: a uniform permutation
    out[:, ORDER:ORDER + 4] = np.where(u[:, 8:9] < jitter_p, order, -1)
    out[:, GRAY] = u[:, 9] < grayscale_p
    out[:, BLUR] = u[:, 10] < blur_p
    out[:, SIGMA] = sigma[0] + (sigma[1] - sigma[0]) * u[:, 11]
    return out


def sample_color_params(n: int, **kwargs) -> torch.Tensor:
    """n x N_PARAMS parameters drawn from torch's RNG (color_params' keyword arguments)."""
    return torch.from_numpy(color_params(torch.rand(n, N_UNIFORMS, dtype=torch.float64).numpy(), **kwargs))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma of N x 3 x H x W."""
    return torch.mul(x[:, 0:1], GRAY_WEIGHTS[0]).add_(x[:, 1:2], alpha=GRAY_WEIGHTS[1]).add_(
        x[:, 2:3], alpha=GRAY_WEIGHTS[2])


def _brightness_(x, f):
    x.mul_(f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _contrast_(x, f):
    m = x.mean((2, 3))
    mean = m[:, 0] * GRAY_WEIGHTS[0] + m[:, 1] * GRAY_WEIGHTS[1] + m[:, 2] * GRAY_WEIGHTS[2]  # N: mean luma
    x.mul_(f.view(-1, 1, 1, 1)).add_(((1.0 - f) * mean).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _saturation_(x, f):
    gray = _gray(x).mul_((1.0 - f).view(-1, 1, 1, 1))
    x.mul_(f.view(-1, 1, 1, 1)).add_(gray).clamp_(0.0, 1.0)


def _hue_(x, shift):
    """HSV hue rotation by ``shift`` turns (|shift| <= 0.5), in place. v = max and c = max - min are
    kept; with h in [0, 6) the hue in sixths, channel n (R 5, G 3, B 1) becomes
    v - c clamp(2 - d, 0, 1), d the distance from n + h to 2 on the circle of length 6."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mx, mn = x.amax(1), x.amin(1)                                # N x H x W
    c = mx - mn
    # hue + 1 in [0, 6]: (g - b) / c + 1 where R is the max, (b - r) / c + 3 for G, (r - g) / c + 5 for B
    h = torch.where(mx == r, (g - b).add_(c), torch.where(mx == g, (b - r).add_(c, alpha=3), (r - g).add_(c, alpha=5)))
    h.div_(c.clamp(min=1e-12)).add_((6.0 * torch.remainder(shift, 1.0)).view(-1, 1, 1))  # in [0, 12)
    h = torch.where(h >= 6.0, h - 6.0, h)                        # hue + 1 in [0, 6); grey pixels: any
    a = h.unsqueeze(1).repeat(1, 3, 1, 1)
    a[:, 0].add_(2.0)
    a[:, 2].sub_(2.0)
    a.abs_()                                                     # |n + hue - 2| < 8, n = 5, 3, 1
    d = torch.minimum(a, (a - 6.0).abs_())
    torch.sub(mx.unsqueeze(1), d.neg_().add_(2.0).clamp_(0.0, 1.0).mul_(c.unsqueeze(1)), out=x)


def _grayscale_(x):
    x.copy_(_gray(x).expand_as(x))


def _blur_(x, sigma):
    """Gaussian blur of each N x 3 x H x W image with its own sigma, in place, as one depthwise
    separable convolution (each kernel zero-padded to the largest)."""
    n, _, height, width = x.shape
    half = min(int(math.ceil(3.0 * float(sigma.max()))), height - 1, width - 1)
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    kernel = kernel * (t.abs()[None] <= torch.ceil(3.0 * sigma)[:, None])  # each crop's own 3-sigma support
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # 3N x K
    y = F.pad(x, (half, half, half, half), mode="reflect").view(1, 3 * n, height + 2 * half, width + 2 * half)
    y = F.conv2d(y.contiguous(memory_format=torch.channels_last), kernel[:, None, :, None], groups=3 * n)
    y = F.conv2d(y, kernel[:, None, None, :], groups=3 * n)
    x.copy_(y.view(n, 3, height, width))


def _apply_rows(x, rows: np.ndarray, fn, *args):
    """fn(x[rows], *(a[rows] for a in args)) in place (rows: sorted indices). On the CPU, when the
    rows form at most two runs (one image's few crops), on views of x; else on a gathered copy."""
    if rows.size == 0:
        return
    if rows.size == x.shape[0]:
        fn(x, *args)
        return
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    if x.device.type == "cpu" and starts.size <= 2:
        for a, b in zip(rows[starts].tolist(), (rows[np.append(starts[1:], rows.size) - 1] + 1).tolist()):
            fn(x[a:b], *(t[a:b] for t in args))
        return
    idx = torch.from_numpy(rows).to(x.device)
    sub = x.index_select(0, idx)
    fn(sub, *(t.index_select(0, idx) for t in args))
    x.index_copy_(0, idx, sub)


_JITTER_OPS = (_brightness_, _contrast_, _saturation_, _hue_)


def augment_color(x: torch.Tensor, params: torch.Tensor, *, mean, std) -> torch.Tensor:
    """uint8 N x 3 x H x W crops and their N x N_PARAMS parameters (same device) -> normalised
    float32 crops: colour jitter in each crop's order, grey, blur, (x - mean) / std. Each op runs
    once, on the crops that use it at that step."""
    x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    table = params.cpu().numpy()  # one host copy: which crops take which op
    for step in range(4):
        for op, fn in enumerate(_JITTER_OPS):
            _apply_rows(x, np.flatnonzero(table[:, ORDER + step] == op), fn, params[:, op])
    _apply_rows(x, np.flatnonzero(table[:, GRAY] > 0), _grayscale_)
    _apply_rows(x, np.flatnonzero(table[:, BLUR] > 0), _blur_, params[:, SIGMA])
    return x.sub_(x.new_tensor(mean).view(1, 3, 1, 1)).div_(x.new_tensor(std).view(1, 3, 1, 1))
