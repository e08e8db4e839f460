"""Small file helpers shared by every task (DESIGN.md "Runs, configs, outputs" and "Bad input"):
atomic text / JSON writes (temporary file in the same folder, then rename), 8-bit RGB from images of
any bit depth, and error messages that name the first few of many paths."""
import contextlib
import json
import os
import tempfile

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """A file object on a temporary file beside ``path``, renamed onto ``path`` when the block ends (and
    removed if it raises), so a reader never sees a half-written ``path``. Yields (file, temporary path)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f, tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace."""
    with atomic_open(path) as (f, _):
        f.write(text)


def write_json(path, obj):
    """``obj`` as indented JSON (keys sorted) at ``path``, written atomically (metrics.json and reports)."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def rgb8(img):
    """A PIL image as 8-bit RGB; 16-bit greyscale ("I;16*", and "I" as PIL reads 16-bit files) keeps its
    top 8 bits (value >> 8) instead of being clipped to white by PIL's convert."""
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8
        img = Image.fromarray(values.astype(np.uint8))
    return img.convert("RGB")


def missing_files(paths):
    """The entries of ``paths`` that are not files, with one directory listing per folder."""
    listings = {}
    for path in paths:
        folder = os.path.dirname(path)
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return [p for p in paths if os.path.basename(p) not in listings[os.path.dirname(p)]]


def first_paths(paths, n=10):
    """The first ``n`` of ``paths`` for a message: "a, b, c" or "a, b, ... (first 10 of 25)"."""
    paths = [str(p) for p in paths]
    shown = ", ".join(paths[:n])
    return shown if len(paths) <= n else f"{shown} (first {n} of {len(paths)})"
