"""Landmark training/test samples (paper §5.2, App. A.2) and the dataset check (DESIGN.md "Data").

Pre-processing: the crop box (``landmarks.formats``) enlarged by ``box_scale`` (HRNet's x1.25,
shared/research/anchors_landmarks_3d.md §0.1) is mapped to an ``input_size`` square; the
training augmentation of App. A.2 (rotation +-30 deg, horizontal flip with the layout's
permutation, scale 0.85-1.15, colour jitter) is composed into the same matrix, so the image is
resampled once. Colour jitter is FAN's per-channel gain U(1 - c, 1 + c) (anchors §3.2, the
pipeline the paper follows [4]). Heatmaps are rendered per batch on the device (``heatmaps``).

    python -m landmarks.data --check --dataset {300w,wflw,aflw19,cofw68} --root R [--split S]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.files import first_paths, rgb8
from common.transforms import LandmarkAugment, apply_to_points, crop_from_box, warp_image
from landmarks import formats, scores
from landmarks.heatmaps import DECODERS, heatmaps_to_image, image_to_heatmap, render_heatmaps

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_image(source):
    """(3, H, W) uint8 tensor from a path or an (H, W[, 3]) array, or None if it cannot be decoded."""
    try:
        if isinstance(source, np.ndarray):
            arr = source if source.ndim == 3 else np.repeat(source[..., None], 3, axis=2)
        else:
            with Image.open(source) as im:
                arr = np.asarray(rgb8(im))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)


class LandmarkDataset(torch.utils.data.Dataset):
    """Crops of ``samples`` with their landmarks in crop pixels.

    Items: image (3, S, S) normalised float32; points (P, 2) float32 crop pixels; matrix (3, 3)
    float64 original -> crop; index; valid (False when the image could not be read: the image is
    zeros and the loss / metrics skip it, train.py counts them).
    """

    def __init__(self, samples, *, input_size, box_scale, augment=None, color_scale=0.0,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.samples, self.input_size, self.box_scale = samples, input_size, box_scale
        self.augment, self.color_scale = augment, color_scale
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.crops = crop_from_box(torch.from_numpy(samples.boxes), input_size, box_scale)  # N x 3 x 3

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.input_size
        matrix, points = self.crops[i], torch.from_numpy(self.samples.points[i])
        flipped = False
        if self.augment is not None:
            aug, flipped = self.augment.sample_matrix((s, s))
            matrix = aug @ matrix
        points = apply_to_points(matrix, points)
        if flipped:
            points = points[self.augment.perm]
        raw = read_image(self.samples.images[i])
        image = (torch.zeros(3, s, s) if raw is None
                 else warp_image(raw.float() / 255.0, matrix, s))
        if self.color_scale > 0:
            gain = 1.0 + self.color_scale * (2.0 * torch.rand(3, 1, 1) - 1.0)
            image = (image * gain).clamp(0.0, 1.0)
        return {"image": (image - self.mean) / self.std, "points": points.float(), "matrix": matrix,
                "index": i, "valid": raw is not None}


def train_augment(*, rotation, scale, flip_prob, n_points):
    """App. A.2 geometry: rotation ~ U(+-rotation), scale ~ U(scale), flip with the permutation."""
    return LandmarkAugment(rotation=rotation, scale=tuple(scale), flip_prob=flip_prob, n_points=n_points)


def round_trip(samples, *, input_size, heatmap_size, sigma, box_scale, decode="quarter", chunk=256):
    """GT -> crop -> heatmaps -> decode -> inverse crop, for every sample: (N, P, 2) image coords."""
    crops = crop_from_box(torch.from_numpy(samples.boxes), input_size, box_scale)
    gt = torch.from_numpy(samples.points)
    out = []
    for start in range(0, len(samples), chunk):
        m = crops[start:start + chunk]
        u = apply_to_points(image_to_heatmap(m, input_size, heatmap_size), gt[start:start + chunk])
        out.append(heatmaps_to_image(render_heatmaps(u, heatmap_size, sigma), m, input_size, decode))
    return torch.cat(out).numpy()


def draw_grid(dataset, path, *, n, columns=4):
    """PNG grid of the first ``n`` crops (de-normalised) with their landmarks drawn."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    s = dataset.input_size
    rows = (len(items) + columns - 1) // columns
    grid = Image.new("RGB", (columns * s, rows * s))
    for k, item in enumerate(items):
        img = (item["image"] * dataset.std + dataset.mean).clamp(0, 1)
        tile = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        draw = ImageDraw.Draw(tile)
        for j, (x, y) in enumerate(item["points"].tolist()):
            colour = (0, 255, 0) if j < len(item["points"]) // 2 else (255, 64, 64)
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
        grid.paste(tile, ((k % columns) * s, (k // columns) * s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def _stats(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def check(dataset, root, split, *, out, input_size, heatmap_size, sigma, box_scale, n_grid):
    """Counts, label statistics, a sample grid and the GT round-trip NME of one split."""
    samples = formats.load_split(dataset, root, split)
    bad = [k for k, p in zip(samples.keys, samples.points) if not np.isfinite(p).all()]
    if bad:
        raise formats.DatasetFormatError(f"{dataset}/{split}: non-finite landmarks in {len(bad)} faces: "
                                         f"{first_paths(bad)}")
    sizes, unreadable = [], []
    for source in samples.images:
        if isinstance(source, np.ndarray):
            sizes.append(source.shape[:2][::-1])
            continue
        try:
            with Image.open(source) as im:
                sizes.append(im.size)
        except (OSError, ValueError):
            unreadable.append(source)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    wh = samples.boxes[:, 2:] - samples.boxes[:, :2]
    gt = samples.points
    trips = {}
    for decode in DECODERS:                     # taylor is exact: ~0 unless a transform is wrong
        back = round_trip(samples, input_size=input_size, heatmap_size=heatmap_size, sigma=sigma,
                          box_scale=box_scale, decode=decode)
        err = scores.per_image_nmes(dataset, back, gt, samples.dataset_boxes)[scores.PRIMARY[dataset]] * 100
        trips[f"round_trip_{scores.PRIMARY[dataset]}_{decode}"] = {"mean": float(err.mean()), "max": float(err.max())}
    report = {
        "dataset": dataset, "split": split, "count": len(samples),
        "official_count": formats.OFFICIAL_COUNTS[dataset].get(split), "points": gt.shape[1],
        "unreadable_images": len(unreadable), "image_width": _stats(sizes[:, 0]) if len(sizes) else None,
        "landmark_x": _stats(gt[..., 0]), "landmark_y": _stats(gt[..., 1]),
        "crop_box_side": _stats(wh.max(axis=1)),
        "visible_fraction": None if samples.visible is None else float(samples.visible.mean()),
        **trips,
    }
    grid = os.path.join(out, f"check_{dataset}_{split}.png")
    plain = LandmarkDataset(samples, input_size=input_size, box_scale=box_scale)
    draw_grid(plain, grid, n=n_grid)
    report["grid"] = grid
    if unreadable:
        print(f"unreadable images ({len(unreadable)}): {first_paths(unreadable)}", file=sys.stderr)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m landmarks.data", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", required=True, help="run the dataset check")
    parser.add_argument("--dataset", required=True, choices=sorted(formats.LOADERS))
    parser.add_argument("--root", required=True, help="dataset root (the folder of its released layout)")
    parser.add_argument("--split", help="one split (default: every split present)")
    parser.add_argument("--out", default="runs/check", help="folder for the PNG grids")
    parser.add_argument("--input-size", type=int, default=256, help="crop size (paper: 256)")
    parser.add_argument("--heatmap-size", type=int, default=64, help="heatmap size (paper: 64)")
    parser.add_argument("--sigma", type=float, default=1.5, help="heatmap Gaussian std, heatmap px")
    parser.add_argument("--box-scale", type=float, default=1.25, help="crop side / box side (HRNet 1.25)")
    parser.add_argument("--n-grid", type=int, default=16, help="samples drawn in the PNG grid")
    args = parser.parse_args(argv)
    splits = [args.split] if args.split else list(formats.OFFICIAL_COUNTS[args.dataset])
    reports = []
    for split in splits:
        try:
            report = check(args.dataset, args.root, split, out=args.out, input_size=args.input_size,
                           heatmap_size=args.heatmap_size, sigma=args.sigma, box_scale=args.box_scale,
                           n_grid=args.n_grid)
        except (formats.DatasetFormatError, FileNotFoundError) as e:
            absent = isinstance(e, formats.DatasetMissingError) and (args.dataset, split) == ("300w", "private")
            if args.split or not absent:
                raise SystemExit(f"dataset check failed: {e}")
            print(f"300W private test set not present ({e}); skipped")
            continue
        print(json.dumps(report, indent=1))
        reports.append(report)
    summary = {r["split"]: {"count": r["count"], **{k.rsplit("_", 1)[1]: v["mean"] for k, v in r.items()
                                                  if k.startswith("round_trip")}} for r in reports}
    print(json.dumps({"dataset": args.dataset, "round_trip_nme_pct": summary}))


if __name__ == "__main__":
    main()
