"""Gaussian heatmap targets and sub-pixel decoding for heatmap regression (paper §5.2, following FAN [4]).

Coordinates follow ``common.transforms``: 0-based and continuous, pixel k has its centre at k.
A 256 crop maps to its 64 x 64 heatmap by ``common.transforms.resize`` (u = (x + 0.5) / 4 - 0.5),
so no half-pixel fix-up is needed when decoding, unlike FAN (-0.5) and HRNet (+0.5) which work in
1-based pixel indices (shared/research/anchors_landmarks_3d.md §3.3).
"""
import torch

from common.transforms import apply_to_points, as_matrix, invert, resize


def render_heatmaps(points, size, sigma):
    """Unnormalised Gaussians (peak 1) centred on ``points``, all points at once.

    points: (..., P, 2) float x, y in heatmap pixels (no rounding, unlike HRNet's
    ``generate_target``, anchors §3.2); size: int or (h, w); sigma: std in heatmap pixels.
    Returns (..., P, h, w) float32. A non-finite point (missing label) gives an all-zero map.
    The Gaussian is separable, so the map is the outer product of a row and a column profile.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    p = torch.as_tensor(points, dtype=torch.float32)
    finite = torch.isfinite(p).all(-1, keepdim=True)                      # (..., P, 1)
    p = torch.where(finite, p, torch.zeros_like(p))
    xs = torch.arange(w, dtype=torch.float32, device=p.device)
    ys = torch.arange(h, dtype=torch.float32, device=p.device)
    gx = torch.exp(-(xs - p[..., 0:1]) ** 2 / (2 * sigma ** 2)) * finite  # (..., P, w)
    gy = torch.exp(-(ys - p[..., 1:2]) ** 2 / (2 * sigma ** 2))           # (..., P, h)
    return gy[..., :, None] * gx[..., None, :]                            # (..., P, h, w)


DECODERS = ("quarter", "taylor")


def decode_heatmaps(heatmaps, method="quarter"):
    """Sub-pixel peak of every heatmap, vectorised over all leading dimensions.

    "quarter" (the paper's pipeline [4]): argmax + a quarter-pixel step toward the higher
    neighbour per axis (FAN ``_get_preds_fromhm``, HRNet ``decode_preds``; anchors §3.3), skipped
    on the border as in both; error up to 0.25 px per axis by construction.
    "taylor": argmax + one Newton step on the log-heatmap with central differences (DARK,
    ``ilovepose/DarkPose`` ``taylor``, anchors §3.3, without its pre-blur); exact for a Gaussian
    map, so the dataset check's round trip is ~0 and an off-by-one bug stands out. Falls back to
    the quarter step where the log-map is not locally concave, and clamps the step to +-0.5 px.

    heatmaps: (..., P, h, w). Returns (coords (..., P, 2) float32 heatmap pixels, peak values (..., P)).
    """
    if method not in DECODERS:
        raise ValueError(f"heatmap decoder must be one of {DECODERS}, got {method!r}")
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.detach().flatten(-2).float()                          # (..., P, h*w)
    peak, idx = flat.max(-1)
    y, x = idx // w, idx % w

    def at(dy, dx):
        return flat.gather(-1, ((y + dy).clamp(0, h - 1) * w + (x + dx).clamp(0, w - 1))[..., None])[..., 0]

    inside_x = (x > 0) & (x < w - 1)
    inside_y = (y > 0) & (y < h - 1)
    step = torch.stack([torch.sign(at(0, 1) - at(0, -1)) * inside_x,
                        torch.sign(at(1, 0) - at(-1, 0)) * inside_y], dim=-1) * 0.25
    if method == "taylor":
        log = {d: torch.log(at(*d).clamp(min=1e-10)) for d in
               [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)]}
        gx, gy = (log[0, 1] - log[0, -1]) / 2, (log[1, 0] - log[-1, 0]) / 2
        hxx = log[0, 1] - 2 * log[0, 0] + log[0, -1]
        hyy = log[1, 0] - 2 * log[0, 0] + log[-1, 0]
        hxy = (log[1, 1] - log[1, -1] - log[-1, 1] + log[-1, -1]) / 4
        det = hxx * hyy - hxy * hxy
        ok = inside_x & inside_y & (hxx < 0) & (det > 1e-12)
        det = torch.where(ok, det, torch.ones_like(det))
        newton = -torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=-1) / det[..., None]
        step = torch.where(ok[..., None], newton.clamp(-0.5, 0.5), step)
    coords = torch.stack([x.float(), y.float()], dim=-1) + step
    return coords, peak


def crop_to_heatmap(points, input_size, heatmap_size):
    """Crop pixels -> heatmap pixels, u = (x + 0.5) * h / S - 0.5 (``common.transforms.resize``)."""
    ratio = heatmap_size / input_size
    return (points + 0.5) * ratio - 0.5


def flip_heatmaps(heatmaps, perm):
    """Heatmaps of the mirrored image mapped back to the original: mirror columns (pixel j <->
    w-1-j, i.e. u -> w-1-u, matching ``common.transforms.hflip`` on the crop) and swap left/right
    points with the flip permutation ``perm`` (face-alignment's flip-test, anchors §1.5)."""
    return heatmaps.flip(-1)[..., perm, :, :]


def image_to_heatmap(crop_matrix, input_size, heatmap_size):
    """Matrix (..., 3, 3) from original-image pixels to heatmap pixels: the crop, then the resize."""
    scale = resize((input_size, input_size), (heatmap_size, heatmap_size))
    return scale @ as_matrix(crop_matrix)


def heatmaps_to_image(heatmaps, crop_matrix, input_size, method="quarter"):
    """Decode (N, P, h, w) heatmaps to float image coordinates (N, P, 2) with the inverse of the
    crop transform (N, 3, 3) that made the input; no rounding (FAN/HRNet truncate, anchors §0.4)."""
    coords, _ = decode_heatmaps(heatmaps, method)
    back = invert(image_to_heatmap(crop_matrix, input_size, heatmaps.shape[-1]))
    return apply_to_points(back.to(coords.device), coords.double())
