"""AffectNet faces for emotion recognition (paper App. A.2, D.1) and the dataset check.

Each sample is the face box of its list row (``emotion.affectnet``; either release, the CSV lists or the
per-image ``.npy`` files, detected from the root) enlarged by ``box_scale`` and mapped to an ``input_size``
square (the ``.npy`` release's images are face crops: their box is the whole image); training adds
App. A.2's augmentation for emotion: rotation ±30°, flip, scale 0.85-1.15 and colour jitter, without the
Gaussian blur used for AUs. The validation list is the test set (the official test set is not released,
research §5.1).

    python -m emotion.data --check --dataset affectnet --root R [--split train|val] [--num-classes 8] \
        [--layout auto|csv|npy]
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from common.face_crop import MEAN, STD, FaceCrop, read_rgb, readable
from common.files import first_paths, missing_files
from common.logger import log
from emotion.affectnet import CLASS_NAMES, LAYOUTS, read_split

ARRAY_FIELDS = ("boxes", "landmarks", "expression", "valence", "arousal", "va_valid")


def load_split(root, split, num_classes=8, layout="auto"):
    """The parsed annotations of ``split`` ("train" or "val"), image paths made absolute; ``layout`` "auto"
    detects the release (CSV lists or per-image .npy, ``emotion.affectnet``), "csv" / "npy" choose one."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    table, image_dir, source = read_split(root, split, num_classes, layout)
    table["keys"] = table["paths"]
    table["paths"] = [os.path.join(image_dir, p) for p in table["paths"]]
    missing = missing_files(table["paths"])
    if missing:
        log(f"{source}: {len(missing)} listed images are missing (skipped as unreadable): "
            f"{first_paths(missing)}")
    table["num_classes"] = num_classes
    return table


def select(table, rows):
    """The rows ``rows`` of a parsed table (few-shot subsets)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = dict(table, **{k: table[k][rows] for k in ARRAY_FIELDS})
    out["paths"] = [table["paths"][i] for i in rows]
    out["keys"] = [table["keys"][i] for i in rows]
    return out


class AffectNetFaces(Dataset):
    """(face crop, expression, valence, arousal, va_valid); an unreadable image gives None; a NaN box (the
    .npy release) crops the whole image."""

    def __init__(self, table, transform):
        self.table, self.transform = table, transform

    def __len__(self):
        return len(self.table["paths"])

    def __getitem__(self, i):
        image = read_rgb(self.table["paths"][i])
        if image is None:
            return None
        t = self.table
        box = None if np.isnan(t["boxes"][i]).any() else t["boxes"][i]
        return {"image": self.transform(image, box), "expression": int(t["expression"][i]),
                "valence": float(t["valence"][i]), "arousal": float(t["arousal"][i]),
                "va_valid": bool(t["va_valid"][i]), "index": i}


def build_dataset(table, *, train, input_size, box_scale, augment):
    """AffectNetFaces with the App. A.2 augmentation (``augment``: FaceCrop arguments) or the plain crop."""
    return AffectNetFaces(table, FaceCrop(size=input_size, box_scale=box_scale, train=train,
                                          **(augment if train else {})))


def draw_grid(dataset, path, *, n, columns=4):
    """PNG grid of ``n`` evenly spaced crops with class name, valence and arousal written on them."""
    picks = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    items = [it for it in (dataset[int(i)] for i in picks) if it is not None]
    s = dataset.transform.size
    grid = Image.new("RGB", (columns * s, max(1, -(-len(items) // columns)) * s))
    for k, item in enumerate(items):
        img = (item["image"] * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)).clamp(0, 1)
        tile = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        va = f"v {item['valence']:+.2f} a {item['arousal']:+.2f}" if item["va_valid"] else "v/a masked"
        ImageDraw.Draw(tile).multiline_text((2, 2), f"{CLASS_NAMES[item['expression']]}\n{va}", fill=(255, 255, 0))
        grid.paste(tile, ((k % columns) * s, (k // columns) * s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def label_statistics(table):
    """Class counts and valence / arousal statistics over the annotated rows."""
    counts = np.bincount(table["expression"], minlength=table["num_classes"])
    stats = {"classes": {CLASS_NAMES[c]: int(n) for c, n in enumerate(counts)},
             "va_masked_rows": int((~table["va_valid"]).sum())}
    for name in ("valence", "arousal"):
        v = table[name][table["va_valid"]].astype(np.float64)
        stats[name] = ({"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
                        "min": float(v.min()), "max": float(v.max())} if v.size else None)
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m emotion.data", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", required=True, help="run the dataset check")
    parser.add_argument("--dataset", required=True, choices=["affectnet"])
    parser.add_argument("--root", required=True,
                        help="AffectNet root (holds Manually_Annotated_file_lists/, or train_set/ and val_set/)")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS, help="release: detect, CSV lists, per-image .npy")
    parser.add_argument("--split", choices=["train", "val"], help="one split (default both)")
    parser.add_argument("--num-classes", type=int, default=8, choices=[7, 8], help="8 (0-7) or 7 (no Contempt)")
    parser.add_argument("--input-size", type=int, default=224, help="crop size")
    parser.add_argument("--box-scale", type=float, default=1.25, help="crop side / box side")
    parser.add_argument("--out", default="runs/check", help="folder for the PNG grid")
    parser.add_argument("--n-grid", type=int, default=16, help="samples drawn in the grid")
    args = parser.parse_args(argv)
    summary = {}
    for split in [args.split] if args.split else ["train", "val"]:
        try:
            table = load_split(args.root, split, args.num_classes, args.layout)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"dataset check failed: {e}")
        ds = build_dataset(table, train=False, input_size=args.input_size, box_scale=args.box_scale, augment={})
        unreadable = [p for p in table["paths"] if not readable(p)]
        grid = os.path.join(args.out, f"check_affectnet_{split}.png")
        draw_grid(ds, grid, n=args.n_grid)
        report = {"dataset": "affectnet", "split": split, "count": len(ds), "dropped": table["dropped"],
                  "unreadable_images": len(unreadable), "labels": label_statistics(table), "grid": grid}
        print(json.dumps(report, indent=1))
        summary[split] = {"count": len(ds), "unreadable": len(unreadable)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
