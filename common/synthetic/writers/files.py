"""Byte-deterministic file output for the synthetic benchmark (DESIGN.md "Data"): .mat, images, text.

Every writer goes through these helpers so that one seed always gives the same bytes: scipy's
MAT-file header carries a creation timestamp, which ``save_mat`` replaces by a fixed text.
"""
import io
import os

import numpy as np
import scipy.io
from PIL import Image

# The 116-byte descriptive text at the start of a MATLAB v5 file (scipy writes a timestamp there).
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: facerep common.synthetic"


def write_bytes(path, data):
    """Write ``data`` to ``path``, creating parent folders."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_text(path, lines):
    """Write ``lines`` joined by newlines, with a trailing newline (no header unless a line is one)."""
    write_bytes(path, ("".join(line + "\n" for line in lines)).encode("utf-8"))


def mat_bytes(mdict):
    """MATLAB v5 bytes of ``mdict`` (scipy.io.savemat, uncompressed, 1-D arrays as rows)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mdict, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def save_mat(path, mdict):
    """``scipy.io.savemat`` with a fixed header, so equal contents give equal bytes."""
    write_bytes(path, mat_bytes(mdict))


def encode_image(image, ext, quality=92):
    """JPEG (``.jpg``) or PNG (``.png``) bytes of an ``(H, W, 3)`` or ``(H, W)`` uint8 array or a PIL image."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    ext = ext.lower()
    if ext in (".jpg", ".jpeg"):
        pil.save(buf, format="JPEG", quality=quality)
    elif ext == ".png":
        pil.save(buf, format="PNG")
    else:
        raise ValueError(f"unsupported image extension {ext!r}")
    return buf.getvalue()


def save_image(path, image, quality=92):
    """Encode ``image`` by the extension of ``path`` and write it."""
    write_bytes(path, encode_image(image, os.path.splitext(path)[1], quality=quality))


def cell(items, column=True):
    """A MATLAB cell array (numpy object array) holding ``items``, shaped (N, 1) or (1, N)."""
    arr = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        arr.flat[i] = item
    return arr
