"""Released weights table and file resolution (DESIGN.md "Initialisation and checkpoints"; the one
table hubconf.py reads): names, URLs and sha256 of known checkpoints, and ``resolve`` turning a
name, URL or path into a hash-checked local file.

FRL releases (shared/research/anchors_frl_swav.md §1.4): two ResNet-50 SwAV checkpoints listed in
the README of 1adrianb/unsupervised-face-representation at 8bdb3cc; the Flickr-Face one was
removed from that README on 2024-02-16 and may no longer be served. Their sha256 is not known
here (the files were never downloaded for this project): pass ``sha256=`` to pin a copy, and
record the hash once obtained (anchors §5.1).
"""
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

_FRL = "https://www.adrianbulat.com/downloads/ECCV2022/pretrained_models/unsupervised/"


@dataclass(frozen=True)
class Weights:
    url: str
    arch: str
    sha256: str | None  # None: unknown, not checked unless the caller passes one
    note: str


WEIGHTS = {
    "frl_vgg_face": Weights(_FRL + "flr_r50_vgg_face.pth", "resnet50", None,
                            "FRL SwAV on all of VGGFace2 (paper: VGG-Face, ~3.3M images)"),
    "frl_vgg_face_1m": Weights(_FRL + "flr_r50_vgg_face_1m.pth", "resnet50", None,
                               "FRL SwAV on a random 1M subset of VGGFace2 (paper: VGG-Face-small)"),
    "frl_flickr_face": Weights(_FRL + "flr_r50_flickr_face.pth", "resnet50", None,
                               "FRL SwAV on Flickr-Face; removed from the FRL README on 2024-02-16"),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_url(spec: str) -> bool:
    return urlparse(str(spec)).scheme in ("http", "https", "file")


def resolve(spec, *, sha256: str | None = None, progress: bool = True) -> str:
    """Local path of the weights ``spec``: a WEIGHTS name, a URL (http, https or file; downloaded
    once into torch.hub.get_dir()/checkpoints, later calls reuse the file offline) or a local path.
    The file's sha256 is checked against ``sha256`` or, when None, the table's hash if known."""
    spec = str(spec)
    expected = sha256
    if spec in WEIGHTS:
        expected = expected or WEIGHTS[spec].sha256
        spec = WEIGHTS[spec].url
    if is_url(spec):
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        path = folder / os.path.basename(urlparse(spec).path)
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(spec, str(path), progress=progress)
            except OSError as e:
                raise FileNotFoundError(f"cannot download {spec} ({e}); offline, put the file at {path} "
                                        f"or pass its local path") from None
    else:
        path = Path(spec)
        if not path.is_file():
            known = ", ".join(sorted(WEIGHTS))
            raise FileNotFoundError(f"weights not found: {spec} (expected a file, a URL or one of {known})")
    if expected is not None:
        if not _SHA256.fullmatch(expected.lower()):
            raise ValueError(f"sha256 {expected!r} is not 64 hex digits")
        actual = sha256_file(path)
        if actual != expected.lower():
            raise ValueError(f"{path}: sha256 {actual} does not match the expected {expected.lower()} "
                             f"(corrupt or different file; delete it to download again)")
    return str(path)
