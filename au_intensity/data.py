"""AU-intensity frames of DISFA and BP4D/FERA2015 (paper §5.3, App. A.2) and the dataset check.

Images: DISFA ships videos, so frames are read from an extracted-frames folder
(``Frames_LeftCamera/SNxxx/<frame>.jpg`` by default); BP4D/FERA2015 frames are
``BP4D-training/<subject>/<task>/<frame>.jpg`` (TadasBaltrusaitis/FERA-2015 ``data extraction/
extract_faces_BP4D.m`` walks ``BP4D-training/<subject>/<task>/``). ``data.frame_name`` is a format
string of the label's frame number; the default ``{frame}.jpg`` matches the number by value, so
zero-padded names (``0612.jpg``, ``087.jpg``: BP4D pads to a width fixed per sequence folder, which
machanic/AU_R-CNN ``dataset_toolkit/scripts/AU_intensity_index_file_gen.py`` reads off the folder's
first file) and plain ones (``612.jpg``, ffmpeg's ``%d``) are both found, with one listing per
folder; an explicit width (``{frame:05d}.png``) is used as written. A labelled frame whose image
file is absent is dropped and counted; a subject or sequence folder that is absent is an error.

Crops: a face box per frame / sequence / subject from a ``key,x1,y1,x2,y2`` CSV (``data.boxes``,
default ``face_boxes.csv`` under ``data.root``, written by ``python -m au_intensity.boxes``; a key
``SN001`` or ``F001/T1`` covers all its frames). Boxes are 0-based pixel coordinates with pixel
centres at integers (common/transforms.py), x1 y1 x2 y2 the box's outer edges; the crop is the
square of side ``data.box_scale`` x the longer box side about the box centre. ``data.boxes=none``
letterboxes the whole frame instead (box_scale 1).

    python -m au_intensity.data --check --dataset {disfa,bp4d} --root R [--split S] [--fold F]
"""
import argparse
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from au_intensity import labels as L
from common.face_crop import MEAN, STD, FaceCrop, read_rgb, readable
from common.files import first_paths
from common.logger import log

DATASETS = ("disfa", "bp4d")
# data.* config keys that say where a split's frames are and how they are cropped (split_dataset's arguments)
LAYOUT_KEYS = ("dataset", "root", "fold", "fold_scheme", "frames_dir", "frame_name", "boxes", "input_size", "box_scale")
DEFAULT_LAYOUT = {  # dataset -> (frames folder, frame file name pattern)
    "disfa": ("Frames_LeftCamera", "{frame}.jpg"),
    "bp4d": ("BP4D-training", "{frame}.jpg"),
}
BOXES_FILE = "face_boxes.csv"  # au_intensity.boxes' output under the dataset root (the configs' data.boxes)
WHOLE_FRAME = ("none", "")     # data.boxes values that letterbox the whole frame


@dataclass
class FrameIndex:
    """Labelled frames of one split: keys ``SN001/12`` or ``F001/T1/612``, image paths, labels (N, K)."""
    keys: list
    paths: list
    labels: np.ndarray
    aus: tuple
    counts: dict
    dataset: str = ""
    root: str = ""

    def select(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return FrameIndex([self.keys[i] for i in rows], [self.paths[i] for i in rows], self.labels[rows],
                          self.aus, dict(self.counts, selected=len(rows)), self.dataset, self.root)


def split_subjects(dataset, split, *, fold=0, fold_scheme="frl"):
    """Subjects of a split: DISFA train / val / test of ``fold`` under ``fold_scheme`` ("frl" or "jaa");
    BP4D train / devel ("test" is an alias of devel, the FERA2015 intensity test protocol)."""
    if dataset == "disfa":
        if fold_scheme not in L.DISFA_FOLDS or not 0 <= fold < 3:
            raise ValueError(f"DISFA folds: scheme in {sorted(L.DISFA_FOLDS)}, fold in 0-2; got {fold_scheme}, {fold}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"DISFA split must be train, val or test, got {split!r}")
        return L.DISFA_FOLDS[fold_scheme][fold][split]
    if dataset == "bp4d":
        split = "devel" if split == "test" else split
        if split not in L.BP4D_SPLITS:
            raise ValueError(f"BP4D split must be train or devel/test, got {split!r}")
        return L.BP4D_SPLITS[split]
    raise ValueError(f"unknown AU dataset {dataset!r}; expected one of {DATASETS}")


def numbered_files(folder, suffix):
    """{frame number: file name} of the ``<digits><suffix>`` files of ``folder`` from one listing, whatever
    their zero padding (BP4D pads per sequence folder: module docstring); two names of one number raise."""
    stems = {n: n[: len(n) - len(suffix)] for n in os.listdir(folder) if n.endswith(suffix)}
    names = [n for n, stem in stems.items() if stem.isdigit()]
    numbers = np.array([int(stems[n]) for n in names], dtype=np.int64)
    table = dict(zip(numbers.tolist(), names))
    if len(table) != len(names):
        values, counts = np.unique(numbers, return_counts=True)
        twice = int(values[counts > 1][0])
        raise ValueError(f"{folder}: frame {twice} has several files: "
                         + ", ".join(sorted(n for n in names if int(stems[n]) == twice)))
    return table


def _frames_on_disk(folder, frames, frame_name):
    """Paths of the labelled ``frames`` in ``folder`` and whether each exists (one listing per folder)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"frames folder not found: {folder} "
                                "(extract the frames first, see au_intensity/README.md)")
    suffix = frame_name[len("{frame}"):]
    if frame_name.startswith("{frame}") and "{" not in suffix:      # number by value, any zero padding
        table = numbered_files(folder, suffix)
        names = [table.get(int(f), frame_name.format(frame=int(f))) for f in frames]
        return [os.path.join(folder, n) for n in names], np.array([int(f) in table for f in frames], dtype=bool)
    present = set(os.listdir(folder))
    names = [frame_name.format(frame=int(f)) for f in frames]
    return [os.path.join(folder, n) for n in names], np.array([n in present for n in names], dtype=bool)


def index_split(dataset, root, subjects, *, frames_dir=None, frame_name=None):
    """FrameIndex of ``subjects`` (DISFA subjects or BP4D subjects, all their tasks)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    frames_dir = frames_dir or DEFAULT_LAYOUT[dataset][0]
    frame_name = frame_name or DEFAULT_LAYOUT[dataset][1]
    keys, paths, blocks, missing = [], [], [], []
    counts = {"labelled": 0, "unlabelled_code9": 0, "missing_image": 0}
    if dataset == "disfa":
        aus = L.DISFA_AUS
        units = [(s, s, *L.read_disfa_subject(root, s), 0) for s in subjects]
    else:
        aus = L.BP4D_AUS
        label_dir = L.bp4d_label_folder(root)
        units = [(seq, seq.replace("_", "/", 1), *L.read_bp4d_sequence(label_dir, seq))
                 for seq in L.bp4d_sequences(label_dir, subjects)]
        if not units:
            raise FileNotFoundError(f"{label_dir}: no intensity CSVs for subjects {list(subjects)[:3]}...")
    for _, folder, frames, values, dropped in units:
        file_paths, present = _frames_on_disk(os.path.join(root, frames_dir, folder), frames, frame_name)
        counts["labelled"] += len(frames)
        counts["unlabelled_code9"] += dropped
        counts["missing_image"] += int((~present).sum())
        missing += [p for p, ok in zip(file_paths, present) if not ok]
        keys += [f"{folder}/{int(f)}" for f in frames[present]]
        paths += [p for p, ok in zip(file_paths, present) if ok]
        blocks.append(values[present])
    labels = np.concatenate(blocks) if blocks else np.zeros((0, len(aus)), np.float32)
    counts["frames"] = len(keys)
    if missing:
        log(f"{dataset}: {len(missing)} labelled frames have no image file and are left out: {first_paths(missing)}")
    return FrameIndex(keys, paths, labels, aus, counts, dataset, root)


def load_split(dataset, root, split, *, fold=0, fold_scheme="frl", frames_dir=None, frame_name=None):
    """FrameIndex of one split, or None when the split has no subjects (the jaa folds' val)."""
    subjects = split_subjects(dataset, split, fold=fold, fold_scheme=fold_scheme)
    return index_split(dataset, root, subjects, frames_dir=frames_dir, frame_name=frame_name) if subjects else None


def read_boxes(path):
    """{key: (x1, y1, x2, y2)} from a ``key,x1,y1,x2,y2`` CSV (no header); errors name file and line."""
    boxes = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            try:
                box = tuple(float(v) for v in parts[1:])
            except ValueError:
                box = ()
            if len(parts) != 5 or len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                raise L.LabelFormatError(f"{path}:{number}: expected key,x1,y1,x2,y2 with x2>x1, y2>y1; "
                                         f"got {line.strip()!r}")
            boxes[parts[0].strip()] = box
    return boxes


def resolve_boxes(boxes, root, dataset):
    """The face-box CSV that ``data.boxes`` names ("" for whole frames: "none" or ""); a relative path is
    under ``root``. A named file that is missing raises, naming it and the command that writes it."""
    if str(boxes).strip().lower() in WHOLE_FRAME:
        return ""
    path = boxes if os.path.isabs(boxes) else os.path.join(root, boxes)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"face-box file not found: {path} (data.boxes={boxes!r}, relative to data.root). Write it with "
            f"`python -m au_intensity.boxes --root {root} --dataset {dataset or 'disfa|bp4d'}`, or train on "
            f"letterboxed whole frames with data.boxes=none")
    return path


def check_boxes(data):
    """``resolve_boxes`` of a run's ``data`` config, before anything is written; whole frames log a warning."""
    path = resolve_boxes(data.boxes, data.root, data.dataset)
    if not path:
        log(f"WARNING: data.boxes={data.boxes!r}: {data.dataset} frames are letterboxed whole, the face is a "
            f"small part of the {data.input_size}px input; `python -m au_intensity.boxes` writes face boxes")
    return path


def boxes_for(keys, boxes):
    """(N, 4) boxes for ``keys`` from the longest matching key prefix (frame, sequence, subject); NaN rows
    where no prefix has a box."""
    out = np.full((len(keys), 4), np.nan)
    for i, key in enumerate(keys):
        parts = key.split("/")
        for n in range(len(parts), 0, -1):
            box = boxes.get("/".join(parts[:n]))
            if box is not None:
                out[i] = box
                break
    return out


class AUFrames(Dataset):
    """(image crop, AU intensities) pairs; an unreadable image gives None (dropped by the collate)."""

    def __init__(self, index, transform, boxes=None):
        self.index, self.transform = index, transform
        self.boxes = boxes if boxes is not None else np.full((len(index.keys), 4), np.nan)

    def __len__(self):
        return len(self.index.keys)

    def __getitem__(self, i):
        image = read_rgb(self.index.paths[i])
        if image is None:
            return None
        box = self.boxes[i] if np.isfinite(self.boxes[i]).all() else None
        return {"image": self.transform(image, box), "target": torch.from_numpy(self.index.labels[i]), "index": i}


def build_dataset(index, *, train, boxes_file, input_size, box_scale, augment):
    """AUFrames with the App. A.2 training augmentation (``augment``: dict of FaceCrop arguments)
    or the plain crop; ``boxes_file`` as ``data.boxes`` ("none" = whole frames at box scale 1; a relative
    path is under the index's root); frames without a box are dropped (counted as "no_box")."""
    path = resolve_boxes(boxes_file, index.root, index.dataset)
    boxes = None
    if path:
        boxes = boxes_for(index.keys, read_boxes(path))
        has = np.isfinite(boxes).all(axis=1)
        index = index.select(np.flatnonzero(has))
        index.counts["no_box"] = int((~has).sum())
        boxes = boxes[has]
    crop = FaceCrop(size=input_size, box_scale=box_scale if path else 1.0, train=train, **(augment if train else {}))
    return AUFrames(index, crop, boxes)


def split_dataset(split, *, dataset, root, fold, fold_scheme, frames_dir, frame_name, boxes, input_size, box_scale,
                  train=False, augment=None):
    """AUFrames of one split (None when the split has no subjects, e.g. the jaa folds' val);
    ``frames_dir`` / ``frame_name`` "" mean the dataset's default layout."""
    index = load_split(dataset, root, split, fold=fold, fold_scheme=fold_scheme, frames_dir=frames_dir or None,
                       frame_name=frame_name or None)
    return None if index is None else build_dataset(index, train=train, boxes_file=boxes, input_size=input_size,
                                                     box_scale=box_scale, augment=augment or {})


def draw_grid(dataset, path, *, n, columns=4):
    """PNG grid of ``n`` evenly spaced crops with their non-zero AU intensities written on them."""
    picks = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    items = [dataset[int(i)] for i in picks]
    items = [it for it in items if it is not None]
    s = dataset.transform.size
    grid = Image.new("RGB", (columns * s, max(1, -(-len(items) // columns)) * s))
    for k, item in enumerate(items):
        img = (item["image"] * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)).clamp(0, 1)
        tile = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        text = " ".join(f"AU{au}:{v:.0f}" for au, v in zip(dataset.index.aus, item["target"].tolist()) if v > 0)
        ImageDraw.Draw(tile).multiline_text((2, 2), "\n".join([dataset.index.keys[item["index"]], text or "all 0"]),
                                            fill=(255, 255, 0))
        grid.paste(tile, ((k % columns) * s, (k // columns) * s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def label_statistics(index):
    """Per-AU mean intensity and counts of each intensity 0-5."""
    hist = (index.labels[..., None] == np.arange(L.MAX_INTENSITY + 1)).sum(axis=0)     # K x 6
    return {f"AU{au}": {"mean": round(float(index.labels[:, j].mean()), 4) if len(index.keys) else None,
                        "counts_0_to_5": " ".join(map(str, hist[j].tolist()))} for j, au in enumerate(index.aus)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m au_intensity.data", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", required=True, help="run the dataset check")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset root (the folder of its released layout)")
    parser.add_argument("--split", help="one split (default: DISFA train/val/test of the fold, BP4D train/devel)")
    parser.add_argument("--fold", type=int, default=0, help="DISFA fold 0-2")
    parser.add_argument("--fold-scheme", default="frl", choices=sorted(L.DISFA_FOLDS), help="DISFA fold lists")
    parser.add_argument("--frames-dir", help="frames folder under the root (default per dataset)")
    parser.add_argument("--frame-name", help="frame file name pattern, e.g. '{frame:05d}.jpg'")
    parser.add_argument("--boxes", help=f"key,x1,y1,x2,y2 face-box CSV, relative to the root, or none "
                                        f"(default: {BOXES_FILE} when the root has it, else none)")
    parser.add_argument("--input-size", type=int, default=224, help="crop size")
    parser.add_argument("--box-scale", type=float, default=1.35, help="crop side / box side (the configs')")
    parser.add_argument("--out", default="runs/check", help="folder for the PNG grid")
    parser.add_argument("--n-grid", type=int, default=16, help="samples drawn in the grid")
    args = parser.parse_args(argv)
    default = ["train", "val", "test"] if args.dataset == "disfa" else ["train", "devel"]
    splits = [args.split] if args.split else default
    boxes = args.boxes or (BOXES_FILE if os.path.isfile(os.path.join(args.root, BOXES_FILE)) else "none")
    summary = {}
    for split in splits:
        try:
            subjects = split_subjects(args.dataset, split, fold=args.fold, fold_scheme=args.fold_scheme)
            if not subjects:
                continue
            index = index_split(args.dataset, args.root, subjects, frames_dir=args.frames_dir,
                                frame_name=args.frame_name)
            ds = build_dataset(index, train=False, boxes_file=boxes, input_size=args.input_size,
                               box_scale=args.box_scale, augment={})
        except (FileNotFoundError, L.LabelFormatError, ValueError) as e:
            raise SystemExit(f"dataset check failed: {e}")
        unreadable = [p for p in ds.index.paths if not readable(p)]
        grid = os.path.join(args.out, f"check_{args.dataset}_{split}.png")
        draw_grid(ds, grid, n=args.n_grid)
        report = {"dataset": args.dataset, "split": split, "boxes": boxes, "subjects": len(subjects),
                  **ds.index.counts, "usable_frames": len(ds), "unreadable_images": len(unreadable),
                  "labels": label_statistics(ds.index), "grid": grid}
        print(json.dumps(report, indent=1))
        summary[split] = {"frames": len(ds), "unreadable": len(unreadable)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
