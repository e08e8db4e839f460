"""Face detectors for curation (paper App. A.1, App. C): `build_detector(name, weights)` and the
MTCNN weight fetcher.

    python -m pretrain.curate.detector --fetch-mtcnn [--cache DIR]
    python -m pretrain.curate.detector --detector mtcnn --image photo.jpg   # prints JSON detections

MTCNN weights are the three files inside the facenet-pytorch 2.6.0 wheel
(facenet_pytorch/data/{pnet,rnet,onet}.pt). The fetcher runs `pip download facenet-pytorch==2.6.0
--no-deps` into a temporary folder and extracts only those files: the package and its pinned
requirements are never installed. RetinaFace weights are the public biubug6/Pytorch_Retinaface
files (Resnet50_Final.pth for the paper's detector, mobilenet0.25_Final.pth), which the user
supplies with --weights; they load strictly.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from pretrain.curate.detect_base import Detector
from pretrain.curate.image_io import read_rgb
from pretrain.curate.mtcnn import MTCNN, ONet, PNet, RNet
from pretrain.curate.retinaface import RetinaFaceDetector, load_retinaface

MTCNN_WHEEL = "facenet-pytorch==2.6.0"
MTCNN_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
DETECTORS = ("mtcnn", "retinaface")


def default_cache() -> Path:
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
                                f"`python -m pretrain.curate.detector --fetch-mtcnn --cache {folder}`")
    nets = []
    for cls, name in zip((PNet, RNet, ONet), MTCNN_FILES):
        net = cls()
        net.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
        nets.append(net)
    return nets


def build_detector(name: str, weights=None, *, device="cpu", min_face=20.0, score_threshold=0.5,
                   variant=None) -> Detector:
    """A `Detector` (detect_base.py). mtcnn: `weights` is the folder with pnet/rnet/onet.pt
    (default ~/.cache/facerep/mtcnn); `min_face` sets its pyramid. retinaface: `weights` is a
    biubug6-layout file (required; the variant is read from its keys unless given);
    `score_threshold` is its confidence cut (MTCNN uses its cascade thresholds 0.6/0.7/0.7)."""
    if name == "mtcnn":
        return MTCNN(*load_mtcnn_nets(weights), min_face=min_face, device=device)
    if name == "retinaface":
        if weights is None:
            raise ValueError("RetinaFace needs --weights FILE: Resnet50_Final.pth or mobilenet0.25_Final.pth "
                             "from biubug6/Pytorch_Retinaface (no weights ship with this repository)")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"RetinaFace weights not found: {weights}")
        return RetinaFaceDetector(load_retinaface(weights, variant), score_threshold=score_threshold,
                                  device=device)
    raise ValueError(f"unknown detector {name!r}; choose from {DETECTORS}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fetch-mtcnn", action="store_true", help="download + extract the MTCNN weights")
    parser.add_argument("--cache", default=None, help="MTCNN weight folder (default ~/.cache/facerep/mtcnn)")
    parser.add_argument("--detector", choices=DETECTORS, default="mtcnn")
    parser.add_argument("--weights", default=None, help="RetinaFace weight file / MTCNN folder")
    parser.add_argument("--image", action="append", default=[], help="image to run the detector on")
    args = parser.parse_args(argv)
    if args.fetch_mtcnn:
        try:
            print(f"MTCNN weights in {fetch_mtcnn(args.cache)}")
        except (RuntimeError, FileNotFoundError) as err:
            raise SystemExit(f"detector --fetch-mtcnn: {err}") from None
    if args.image:
        weights = args.weights or (args.cache if args.detector == "mtcnn" else None)
        try:
            detector = build_detector(args.detector, weights)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"detector: {err}") from None
        for path in args.image:
            img = read_rgb(path)
            if img is None:
                raise SystemExit(f"{path}: not a readable image")
            boxes, scores, points = detector.detect([img])[0]
            print(json.dumps({"image": path, "boxes": boxes.tolist(), "scores": scores.tolist(),
                              "points": points.tolist()}))
    if not (args.fetch_mtcnn or args.image):
        parser.error("nothing to do: give --fetch-mtcnn and/or --image")


if __name__ == "__main__":
    main()
