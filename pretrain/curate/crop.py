"""Detect and crop faces for pre-training (paper App. A.1: "detected using [18] and then cropped
... so that the face will take approx. 190px on a 256x256 px image"; App. C, Fig. 5).

    python -m pretrain.curate.crop --images DIR --out DIR --detector {mtcnn,retinaface} [--weights FILE]

Writes OUT/crops/<relative dir>/<stem>_<k>.jpg (k-th kept face; a non-.jpg source keeps its
extension in the stem: a.png -> a_png_0.jpg), OUT/manifest.jsonl (one line per source image:
its faces with box, score, 5 landmarks in source pixels, face size, crop path), OUT/summary.json,
and the face-size histogram of Fig. 5 (OUT/face_sizes.png + .json). Face size = the longer side
of the detector box in source pixels, the quantity the 190-px rule scales. Re-running skips the
images already in the manifest. Unreadable images are skipped and counted.
Thresholds (the paper gives none; ours): faces of at least --min-face px (default 40) and score
at least --min-score (default 0.9).
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import write_json
from common.logger import JsonlWriter, log, progress, read_jsonl
from pretrain.curate.manifest import load_manifest
from pretrain.curate.detector import DETECTORS, build_detector
from pretrain.curate.image_io import crop_face, list_images, read_rgb, to_crop, write_image


def detect_resized(detector, images, max_side):
    """Detect on copies shrunk so the longer side is at most max_side; results in source pixels."""
    small, factors = [], []
    for img in images:
        h, w = img.shape[:2]
        f = (1.0, 1.0)
        if max_side and max(h, w) > max_side:
            size = (max(1, round(w * max_side / max(h, w))), max(1, round(h * max_side / max(h, w))))
            img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
            f = (size[0] / w, size[1] / h)
        small.append(img)
        factors.append(np.asarray(f, dtype=np.float32))
    results = []
    for (boxes, scores, points), f in zip(detector.detect(small), factors):
        results.append((boxes.numpy() / np.tile(f, 2), scores.numpy(), points.numpy() / f))
    return results


def crop_stem(src):
    """'dir/a.jpg' -> 'dir/a', 'dir/a.png' -> 'dir/a_png': one crop name per source file."""
    path = Path(src)
    suffix = path.suffix.lower()
    return path.with_suffix("").as_posix() + ("" if suffix == ".jpg" else "_" + suffix.lstrip("."))


def face_record(image, box, score, points, crop_rel, out_dir, out_size, face_size):
    """Crop one face, write it, and return its manifest entry."""
    crop, region = crop_face(image, box, out_size, face_size)
    write_image(out_dir / crop_rel, crop)
    return {"crop": crop_rel, "box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
            "landmarks": np.round(points.astype(np.float64), 2).tolist(), "size": round(float(max(box[2:] - box[:2])), 2),
            "landmarks_crop": np.round(to_crop(points, region, out_size), 2).tolist()}


def crop_folder(images_dir, out_dir, detector, *, min_face=40.0, min_score=0.9, out_size=256,
                face_size=190, max_side=None, batch_size=8, detector_name=""):
    """Detect + crop every image under images_dir into out_dir; returns the summary dict."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    done = {r["source"] for r in load_manifest(manifest)}
    todo = [s for s in list_images(images_dir) if s not in done]
    log(f"crop: {len(todo)} images to process ({len(done)} already in {manifest})")
    writer = JsonlWriter(str(manifest))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in progress(batches, desc="detect+crop", unit="batch"):
        loaded = [(src, read_rgb(images_dir / src)) for src in batch]
        for src, _ in (x for x in loaded if x[1] is None):
            writer.write({"source": src, "error": "unreadable"})
        good = [(src, img) for src, img in loaded if img is not None]
        detections = detect_resized(detector, [img for _, img in good], max_side)
        for (src, img), (boxes, scores, points) in zip(good, detections):
            sizes = (boxes[:, 2:] - boxes[:, :2]).max(1) if len(boxes) else np.zeros(0)
            small, weak = sizes < min_face, scores < min_score
            keep = np.flatnonzero(~small & ~weak)
            stem = crop_stem(src)
            faces = [face_record(img, boxes[i], scores[i], points[i], f"crops/{stem}_{k}.jpg", out_dir,
                                 out_size, face_size) for k, i in enumerate(keep)]
            writer.write({"source": src, "width": img.shape[1], "height": img.shape[0], "faces": faces,
                          "detected": len(boxes), "too_small": int(small.sum()),
                          "low_score": int((weak & ~small).sum())})
    summary = summarise(read_jsonl(manifest), out_dir)
    summary.update(detector=detector_name, min_face=min_face, min_score=min_score, out_size=out_size,
                   face_size=face_size)
    write_json(out_dir / "summary.json", summary)
    log(f"crop: {summary['faces']} faces from {summary['images']} images; "
        f"{summary['unreadable']} unreadable images skipped")
    return summary


def summarise(records, out_dir, bin_px=20):
    """Counts over the manifest, and the Fig. 5 face-size histogram (PNG + JSON)."""
    ok = [r for r in records if "error" not in r]
    sizes = np.array([f["size"] for r in ok for f in r["faces"]], dtype=np.float64)
    top = max(bin_px, float(np.ceil(sizes.max() / bin_px) * bin_px)) if len(sizes) else bin_px
    counts, edges = np.histogram(sizes, bins=np.arange(0.0, top + bin_px, bin_px))
    hist = {"bin_edges": edges.tolist(), "counts": counts.tolist(), "n": int(len(sizes))}
    write_json(out_dir / "face_sizes.json", hist)
    plot_histogram(edges, counts, out_dir / "face_sizes.png")
    return {"images": len(records), "unreadable": len(records) - len(ok), "faces": int(len(sizes)),
            "images_with_faces": sum(1 for r in ok if r["faces"]),
            "detected": sum(r["detected"] for r in ok), "too_small": sum(r["too_small"] for r in ok),
            "low_score": sum(r["low_score"] for r in ok)}


def plot_histogram(edges, counts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black", linewidth=0.3)
    ax.set_xlabel("face box size (px, longer side)")
    ax.set_ylabel("faces")
    ax.set_title("Face sizes (paper Fig. 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="folder of source images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (crops/, manifest.jsonl, summary.json)")
    p.add_argument("--detector", choices=DETECTORS, default="mtcnn")
    p.add_argument("--weights", default=None, help="RetinaFace weight file, or MTCNN weight folder")
    p.add_argument("--min-face", type=float, default=40.0, help="smallest face box (longer side, px)")
    p.add_argument("--min-score", type=float, default=0.9, help="smallest detector score kept")
    p.add_argument("--size", type=int, default=256, help="crop size (App. A.1: 256)")
    p.add_argument("--face-size", type=float, default=190.0, help="face box side in the crop (App. A.1: 190)")
    p.add_argument("--max-side", type=int, default=1280, help="detect on copies at most this long (0: off)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not Path(args.images).is_dir():
        raise SystemExit(f"--images: folder not found: {args.images}")
    try:
        detector = build_detector(args.detector, args.weights, device=args.device,
                                  min_face=min(20.0, args.min_face), score_threshold=min(0.5, args.min_score))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"crop: {err}") from None
    summary = crop_folder(args.images, args.out, detector, min_face=args.min_face, min_score=args.min_score,
                          out_size=args.size, face_size=args.face_size, max_side=args.max_side or None,
                          batch_size=args.batch_size, detector_name=args.detector)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
