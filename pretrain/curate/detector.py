"""Face detectors for curation (paper App. A.1, App. C): `build_detector(name, weights)` and its CLI.

    python -m pretrain.curate.detector --fetch-mtcnn [--cache DIR]
    python -m pretrain.curate.detector --detector mtcnn --image photo.jpg   # prints JSON detections

MTCNN (network, cascade and weight fetcher) lives in common/face_detect, shared with
au_intensity/boxes.py; `--fetch-mtcnn` here calls its fetcher. RetinaFace weights are the public
biubug6/Pytorch_Retinaface files (Resnet50_Final.pth for the paper's detector, mobilenet0.25_Final.pth),
which the user supplies with --weights; they load strictly.
"""
import argparse
import json
from pathlib import Path

from common.face_detect.base import Detector
from common.face_detect.mtcnn_weights import build_mtcnn, fetch_mtcnn
from pretrain.curate.image_io import read_rgb
from pretrain.curate.retinaface import RetinaFaceDetector, load_retinaface

DETECTORS = ("mtcnn", "retinaface")


def build_detector(name: str, weights=None, *, device="cpu", min_face=20.0, score_threshold=0.5,
                   variant=None) -> Detector:
    """A `Detector` (common/face_detect/base.py). mtcnn: `weights` is the folder with pnet/rnet/onet.pt
    (default ~/.cache/facerep/mtcnn); `min_face` sets its pyramid. retinaface: `weights` is a
    biubug6-layout file (required; the variant is read from its keys unless given);
    `score_threshold` is its confidence cut (MTCNN uses its cascade thresholds 0.6/0.7/0.7)."""
    if name == "mtcnn":
        return build_mtcnn(weights, device=device, min_face=min_face)
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
