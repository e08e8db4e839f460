"""Photo-like canvases for the synthetic benchmark (DESIGN.md "Data"): clutter, placement, degradations.

Real landmark sets ship whole photos with the face somewhere in them (300W, WFLW, AFLW, COFW);
these helpers put a rendered face into a larger cluttered canvas and apply the photometric
conditions that WFLW's attributes name (illumination, make-up, blur). All are vectorised numpy/PIL.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def clutter(rng, height, width):
    """An (H, W, 3) uint8 background: smooth colour noise plus a few random rectangles and ellipses."""
    coarse = rng.uniform(30, 225, size=(max(2, height // 24), max(2, width // 24), 3)).astype(np.uint8)
    pil = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2) * width)
        y0, y1 = np.sort(rng.uniform(-0.2, 1.2, 2) * height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([float(x0), float(y0), float(x1), float(y1)], fill=colour)
    image = np.asarray(pil, dtype=np.int16)
    image = image + rng.integers(-8, 9, size=image.shape, dtype=np.int16)   # sensor-like grain
    return np.clip(image, 0, 255).astype(np.uint8)


def place(rng, canvas_hw, image, box=None):
    """Paste ``image`` at a random position of a fresh cluttered canvas of size ``canvas_hw``.

    The position is drawn so that ``box`` (x1, y1, x2, y2 in ``image`` pixels; default the whole image)
    stays inside the canvas. Returns (canvas, (dx, dy)); a point (x, y) of ``image`` is (x + dx, y + dy).
    """
    height, width = canvas_hw
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (0, 0, w - 1, h - 1) if box is None else box
    lo_x, hi_x = int(np.ceil(-x1)), int(np.floor(width - 1 - x2))
    lo_y, hi_y = int(np.ceil(-y1)), int(np.floor(height - 1 - y2))
    if lo_x > hi_x or lo_y > hi_y:
        raise ValueError(f"face of {w}x{h} px does not fit into a {width}x{height} canvas")
    dx, dy = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
    canvas = clutter(rng, height, width)
    sx0, sy0 = max(0, -dx), max(0, -dy)                                       # source window
    sx1, sy1 = min(w, width - dx), min(h, height - dy)
    canvas[sy0 + dy:sy1 + dy, sx0 + dx:sx1 + dx] = image[sy0:sy1, sx0:sx1]
    return canvas, (dx, dy)


def crop(image, x0, y0, x1, y1):
    """``image[y0:y1, x0:x1]`` with integer bounds clipped to the image."""
    h, w = image.shape[:2]
    return image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]


def blur(image, radius):
    """Gaussian blur (PIL) of an (H, W, 3) uint8 image."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def illumination(image, gain, gamma):
    """Global exposure change: ``255 * gain * (x / 255) ** gamma``, clipped."""
    out = 255.0 * gain * (image.astype(np.float32) / 255.0) ** gamma
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def tint_polygon(image, polygon, rgb, alpha):
    """Blend colour ``rgb`` with weight ``alpha`` inside ``polygon`` ((K, 2) pixel points), e.g. lipstick."""
    mask = Image.new("L", (image.shape[1], image.shape[0]), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in polygon], fill=255)
    weight = (np.asarray(mask, dtype=np.float32) / 255.0 * alpha)[..., None]
    out = image.astype(np.float32) * (1 - weight) + np.asarray(rgb, np.float32) * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def hflip_points(points, width):
    """Mirror x of (N, D) pixel points for an image of ``width`` (pixel centres at integers: x' = W - 1 - x)."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = width - 1 - out[:, 0]
    return out
