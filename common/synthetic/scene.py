"""Backgrounds and occluders of the synthetic face renders (issue 3): cluttered or plain scenes, random occluders.

All drawing is vectorised over pixels (each shape touches only its bounding box) and driven by
the caller's ``numpy.random.Generator``, so a scene is a deterministic function of its state.
"""

import numpy as np

_OCCLUDER_SKIN = np.array([[0.93, 0.76, 0.64], [0.75, 0.55, 0.40], [0.45, 0.30, 0.20]])


def background(rng, size, kind="clutter"):
    """(size, size, 3) float32 image in [0, 1]: a flat colour ("plain") or smooth colour noise plus
    random rectangles, ellipses and stripes ("clutter")."""
    if kind == "plain":
        return np.broadcast_to(rng.uniform(0.15, 0.9, 3).astype(np.float32), (size, size, 3)).copy()
    if kind != "clutter":
        raise ValueError(f"background must be 'clutter' or 'plain', got {kind!r}")
    img = _smooth_noise(rng.uniform(0.05, 0.95, (int(rng.integers(2, 7)),) * 2 + (3,)).astype(np.float32), size)
    for _ in range(int(rng.integers(4, 12))):
        kind_shape = int(rng.integers(3))
        colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        alpha = float(rng.uniform(0.5, 1.0))
        cx, cy = rng.uniform(-0.1, 1.1, 2) * size
        rx, ry = rng.uniform(0.04, 0.35, 2) * size
        if kind_shape == 2:  # stripes inside a rectangle
            period, angle = rng.uniform(0.02, 0.08) * size, rng.uniform(0, np.pi)
            _paint(img, cx, cy, rx, ry, colour, alpha, lambda x, y: (
                np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0))
        else:
            ellipse = kind_shape == 1
            _paint(img, cx, cy, rx, ry, colour, alpha,
                   (lambda x, y: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) if ellipse else None)
    return img


def _smooth_noise(low, size):
    """Bilinear upsampling (corners aligned) of a (g, g, 3) grid of colours to (size, size, 3)."""
    g = low.shape[0]
    t = np.linspace(0, g - 1, size, dtype=np.float32)
    i0 = np.minimum(t.astype(np.int64), g - 2)
    f = (t - i0).astype(np.float32)
    rows = low[i0] * (1 - f)[:, None, None] + low[i0 + 1] * f[:, None, None]  # (size, g, 3)
    out = rows[:, i0] * (1 - f)[None, :, None]
    out += rows[:, i0 + 1] * f[None, :, None]
    return out


def _paint(img, cx, cy, rx, ry, colour, alpha, inside=None):
    """Blend ``colour`` into the box (cx +- rx, cy +- ry) of ``img`` where ``inside(x, y)`` holds.

    Returns (y0, y1, x0, x1, mask) of the painted box, or None when it misses the image.
    """
    size = img.shape[0]
    x0, x1 = int(max(0, np.floor(cx - rx))), int(min(size, np.ceil(cx + rx) + 1))
    y0, y1 = int(max(0, np.floor(cy - ry))), int(min(size, np.ceil(cy + ry) + 1))
    if x0 >= x1 or y0 >= y1:
        return None
    y, x = np.ogrid[y0:y1, x0:x1]
    mask = np.ones((y1 - y0, x1 - x0), bool) if inside is None else np.broadcast_to(inside(x, y), (y1 - y0, x1 - x0))
    region = img[y0:y1, x0:x1]
    region += (alpha * mask[..., None]) * (colour - region)
    return (y0, y1, x0, x1, mask)


def occluder(rng, img, landmarks, box):
    """Draw one random occluder over the face in ``img`` (in place); returns its (H, W) bool mask.

    Kinds: a hand-like skin-coloured ellipse, a dark bar (sunglasses / scarf) across the eyes or
    the mouth, or a textured object; centred near a random landmark, sized from the face box.
    """
    mask = np.zeros(img.shape[:2], bool)
    w = max(float(box[2] - box[0]), float(box[3] - box[1]), 8.0)
    kind = int(rng.integers(3))
    if kind == 1:
        band = landmarks[36:48] if rng.random() < 0.5 else landmarks[48:68]
        cx, cy = band.mean(0) + rng.normal(0, 0.03 * w, 2)
        rx, ry = rng.uniform(0.4, 0.6) * w, rng.uniform(0.08, 0.16) * w
        colour = rng.uniform(0.0, 0.35, 3).astype(np.float32)
        inside = None
    else:
        cx, cy = landmarks[int(rng.integers(68))] + rng.normal(0, 0.05 * w, 2)
        rx, ry = rng.uniform(0.15, 0.32, 2) * w
        colour = (_OCCLUDER_SKIN[rng.integers(3)] if kind == 0 else rng.uniform(0, 1, 3)).astype(np.float32)
        inside = lambda x, y: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0  # noqa: E731
    painted = _paint(img, cx, cy, rx, ry, colour, 1.0, inside)
    if painted is None:
        return mask
    y0, y1, x0, x1, m = painted
    mask[y0:y1, x0:x1] = m
    region = img[y0:y1, x0:x1]
    yy = np.linspace(-1, 1, y1 - y0, dtype=np.float32)[:, None, None]
    shade = 1.0 - 0.25 * yy if kind != 2 else 1.0 + 0.15 * np.sign(np.sin(yy * rng.uniform(5, 15)))
    region[m] = np.clip(np.broadcast_to(colour * shade, region.shape)[m], 0, 1)
    return mask
