"""Image files for the curation tools (paper App. A.1, App. C): listing, tolerant reading, atomic
writing, and the 256/190 face crop."""
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".tif", ".tiff")


def list_images(root) -> list:
    """Image files under `root` (recursive), as sorted paths relative to root (POSIX separators)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def read_rgb(path):
    """The image as an RGB uint8 (H, W, 3) array with EXIF orientation applied, or None when the
    file is missing, empty, truncated or not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None


def write_image(path, image, quality=95) -> None:
    """Write an (H, W, 3) uint8 array or PIL image atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    img.save(tmp, quality=quality)
    os.replace(tmp, path)


def crop_region(box, out_size=256, face_size=190):
    """(left, top, side) of the square whose resize to out_size x out_size makes the box's longer
    side span face_size pixels, centred on the box (paper App. A.1: "the face will take approx.
    190px on a 256x256 px image")."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * out_size / face_size
    return (x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side


def crop_face(image, box, out_size=256, face_size=190):
    """The out_size x out_size crop of an RGB array for `box` (zero padding outside the image) and
    the map (left, top, side) that sends source points p to (p - (left, top)) * out_size / side."""
    left, top, side = crop_region(box, out_size, face_size)
    img = Image.fromarray(np.asarray(image))
    x0, y0 = math.floor(left), math.floor(top)
    x1, y1 = math.ceil(left + side), math.ceil(top + side)
    region = img.crop((x0, y0, x1, y1))  # PIL fills outside the image with zeros
    out = region.resize((out_size, out_size), Image.Resampling.BICUBIC,
                        box=(left - x0, top - y0, left - x0 + side, top - y0 + side))
    return np.asarray(out), (left, top, side)


def to_crop(points, region, out_size=256):
    """Source-image points (..., 2) in crop pixel coordinates."""
    left, top, side = region
    return (np.asarray(points, dtype=np.float64) - (left, top)) * out_size / side
