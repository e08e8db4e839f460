"""MTCNN weights offline (DESIGN.md "Offline assets"): the three files inside the facenet-pytorch 2.6.0
wheel (``facenet_pytorch/data/{pnet,rnet,onet}.pt``), and ``build_mtcnn`` to load them.

The fetcher runs ``pip download facenet-pytorch==2.6.0 --no-deps`` into a temporary folder and
extracts only those files: the package and its pinned requirements are never installed.
"""
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from common.face_detect.mtcnn import MTCNN, ONet, PNet, RNet

MTCNN_WHEEL = "facenet-pytorch==2.6.0"
MTCNN_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
FETCH_COMMAND = "python -m common.face_detect --fetch-mtcnn"


def default_cache() -> Path:
    """~/.cache/facerep/mtcnn, where the fetcher puts the weights by default."""
    return Path(os.path.expanduser("~/.cache/facerep/mtcnn"))


def extract_mtcnn_weights(wheel: Path, cache: Path) -> Path:
    """Copy facenet_pytorch/data/{pnet,rnet,onet}.pt out of the wheel into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in MTCNN_FILES:
            member = f"facenet_pytorch/data/{name}"
            if member not in names:
                raise FileNotFoundError(f"{wheel}: has no {member}")
            tmp = cache / f".{name}.tmp{os.getpid()}"
            tmp.write_bytes(zf.read(member))
            os.replace(tmp, cache / name)
    return cache


def fetch_mtcnn(cache: Path | None = None) -> Path:
    """pip-download the facenet-pytorch wheel (no dependencies) and extract the MTCNN weights."""
    cache = Path(cache) if cache else default_cache()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", MTCNN_WHEEL, "--no-deps", "-d", tmp, "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[2:])}` failed:\n{done.stderr.strip()}")
        wheels = sorted(Path(tmp).glob("facenet_pytorch-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {MTCNN_WHEEL} produced no wheel in {tmp}")
        return extract_mtcnn_weights(wheels[0], cache)


def load_mtcnn_nets(weights_dir: Path | None = None):
    """(PNet, RNet, ONet) with the facenet-pytorch weights from `weights_dir` (default: the cache)."""
    folder = Path(weights_dir) if weights_dir else default_cache()
    missing = [n for n in MTCNN_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"MTCNN weights {missing} not found in {folder}; fetch them with "
                                f"`{FETCH_COMMAND} --cache {folder}`")
    nets = []
    for cls, name in zip((PNet, RNet, ONet), MTCNN_FILES):
        net = cls()
        net.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
        nets.append(net)
    return nets


def build_mtcnn(weights=None, *, device="cpu", min_face=20.0, thresholds=(0.6, 0.7, 0.7)) -> MTCNN:
    """MTCNN with the weights in folder `weights` (default ~/.cache/facerep/mtcnn); `min_face` (px)
    sets its pyramid; `thresholds` are the three stages' face-score cut-offs (facenet-pytorch's defaults)."""
    return MTCNN(*load_mtcnn_nets(weights), min_face=min_face, thresholds=thresholds, device=device)
