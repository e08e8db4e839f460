"""VGGFace2 for CosFace training (paper §5.1, App. A.2-A.3): list + 5-point files, ArcFace alignment, flip, subsets.

On-disk format (ox-vgg/vgg_face2 README and meta README; shared/research/anchors_recog_au_emotion.md §2):
identity folders ``train/n000002/0001_01.jpg``; a list file with one relative path per line,
``train_list.txt`` (newer distributions) or ``train.txt``, at the root or in ``meta/``; the MTCNN
points of ``bb_landmark.tar.gz`` in ``loose_landmark_train.csv`` with header
``NAME_ID,P1X,P1Y,...,P5X,P5Y`` and quoted names without extension (``"n000001/0001_01"``), in
the order image-left eye, image-right eye, nose, image-left and image-right mouth corner.
Every face is warped with its 5 points to the ArcFace template (insightface ``face_align.py``,
§1.3; ``common.alignment``) at ``size`` px; the only training augmentation is a random horizontal
flip (App. A.2). Unreadable images are not fatal: they come back with label -1 (CosFace skips
them) and are counted; a malformed annotation file raises naming the file and line.

insightface's pre-aligned 112 x 112 packs (``train.rec`` + ``train.idx`` + ``property``, read without mxnet by
``face_recognition.recordio``) train the same way: no alignment (the crops are aligned already), a resize
to ``size`` when it differs, the same normalisation and flip; an undecodable record is skipped and counted.

Dataset check before a long run:
    python -m face_recognition.data --check --dataset vggface2 --root R [--split train]
    python -m face_recognition.data --check --dataset ijbb --root R/IJBB
    python -m face_recognition.data --check --dataset recordio --root PACK_FOLDER
"""
import argparse
import io
import json
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.alignment import align_face, alignment_residual, arcface_template, umeyama
from common.files import rgb8
from common.subsample import subset_by_identity, subset_keys
from common.transforms import apply_to_points, invert
from face_recognition.recordio import (IndexedRecordReader, RecordIOError, first_label, pack_index, read_property,
                                       unpack_record)

LIST_FILES = {"train": ("train_list.txt", "train.txt"), "test": ("test_list.txt", "test.txt")}
LANDMARK_FILES = {"train": ("loose_landmark_train.csv",), "test": ("loose_landmark_test.csv",)}
META_DIRS = ("", "meta", "bb_landmark", os.path.join("meta", "bb_landmark"))


def find_file(root, names, what):
    """The first of ``names`` found in ``root`` or its meta / bb_landmark folders."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    for sub in META_DIRS:
        for name in names:
            path = os.path.join(root, sub, name)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"{root}: no {what} ({' or '.join(names)}) in {', '.join(d or '.' for d in META_DIRS)}")


def _first_bad_line(path, n_columns, delimiter, skiprows, quotechar, numeric_from):
    """(line number, reason) of the first row that does not parse, scanning the text (error path only)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if number <= skiprows or not line.strip():
                continue
            fields = line.strip().split(delimiter) if delimiter else line.split()
            if len(fields) != n_columns:
                return number, f"expected {n_columns} fields, found {len(fields)}"
            for field in fields[numeric_from:]:
                try:
                    float(field.strip(quotechar or None))
                except ValueError:
                    return number, f"not a number: {field.strip()!r}"
    return None, "unparseable"


def read_table(path, *, n_columns, numeric_from, dtype=np.float32, delimiter=None, skiprows=0, quotechar=None):
    """(first column as str array, the numeric columns ``numeric_from..`` as a 2-D array) of a
    text table, parsed by numpy's C reader; a bad row raises ValueError naming file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    kw = dict(delimiter=delimiter, skiprows=skiprows, quotechar=quotechar, ndmin=1, comments=None)
    try:
        values = np.loadtxt(path, usecols=range(numeric_from, n_columns), dtype=dtype, **{**kw, "ndmin": 2})
        names = np.loadtxt(path, usecols=0, dtype=str, **kw) if numeric_from else None
        if values.shape[1] != n_columns - numeric_from:
            raise ValueError("wrong column count")
    except ValueError:
        line, reason = _first_bad_line(path, n_columns, delimiter, skiprows, quotechar, numeric_from)
        raise ValueError(f"{path}:{line}: malformed row ({reason})") from None
    if names is not None and len(names) != len(values):
        raise ValueError(f"{path}: {len(names)} names but {len(values)} rows of values")
    return names, values


def read_image_list(path):
    """Relative image paths of a VGGFace2 list file (blank lines ignored)."""
    with open(path, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    if not paths:
        raise ValueError(f"{path}: list file names no images")
    return np.asarray(paths)


def read_loose_landmarks(path):
    """(names with '.jpg', float32 N x 5 x 2 points) from ``loose_landmark_*.csv``."""
    names, values = read_table(path, n_columns=11, numeric_from=1, delimiter=",", skiprows=1, quotechar='"')
    return np.char.add(names, ".jpg"), values.reshape(-1, 5, 2)


def load_vggface2(root, split="train"):
    """Index of one VGGFace2 split: {"paths" (relative to root/split), "identities", "points" N x 5 x 2,
    "missing_landmarks": listed images without a landmark row (dropped)}."""
    if split not in LIST_FILES:
        raise ValueError(f"split={split!r}: expected one of {list(LIST_FILES)}")
    listed = read_image_list(find_file(root, LIST_FILES[split], f"{split} list file"))
    names, points = read_loose_landmarks(find_file(root, LANDMARK_FILES[split], f"{split} landmark file"))
    order = np.argsort(names)
    names, points = names[order], points[order]
    pos = np.clip(np.searchsorted(names, listed), 0, len(names) - 1)
    found = names[pos] == listed
    paths = listed[found]
    return {"paths": paths, "identities": np.char.partition(paths, "/")[:, 0],
            "points": points[pos[found]], "missing_landmarks": int((~found).sum())}


def choose_subset(keys, identities, *, fraction, seed, min_identity_fraction, identity_rule_max_fraction):
    """The few-shot subset (sorted keys). Paper §5 / App. A.3: low-data regimes sample images
    without looking at labels, except that face recognition keeps at least 1/4 of the identities
    in the very low (2 %) regime; the identity rule applies to fractions <= identity_rule_max_fraction."""
    if fraction >= 1.0:
        return sorted(keys)
    if fraction <= identity_rule_max_fraction:
        return subset_by_identity(list(keys), list(identities), fraction, seed, min_identity_fraction)
    return subset_keys(list(keys), fraction, seed)


def load_rgb(path):
    """uint8 3 x H x W tensor of the image at ``path``, or None when it cannot be read."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(rgb8(img))
    except (OSError, ValueError, SyntaxError):
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def align_normalise(image, points, size, mean, std):
    """Warp a uint8 3 x H x W image with its 5 points to the ArcFace template at ``size`` px and
    normalise (x/255 - mean) / std; returns float32 3 x size x size."""
    aligned, _ = align_face(image.float().div_(255.0), points, size)
    mean = torch.as_tensor(mean, dtype=aligned.dtype).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=aligned.dtype).view(3, 1, 1)
    return (aligned - mean) / std


class AlignedFaces(torch.utils.data.Dataset):
    """Aligned, normalised faces: item i -> (3 x size x size image, label, i), file root/files[i].

    An unreadable file gives a zero image with label -1, so the caller can skip and count it.
    File names are kept in a numpy array (no per-item Python objects to copy into workers)."""

    def __init__(self, files, points, labels, *, size, mean, std, flip_prob=0.0, root=""):
        if not len(files) == len(points) == len(labels):
            raise ValueError(f"{len(files)} files, {len(points)} point sets, {len(labels)} labels")
        self.root, self.files = root, np.asarray(files)
        self.points = torch.as_tensor(np.asarray(points), dtype=torch.float32)  # widened when aligning
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.size, self.mean, self.std, self.flip_prob = size, tuple(mean), tuple(std), flip_prob

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        image = load_rgb(os.path.join(self.root, str(self.files[i])))
        if image is None:
            return torch.zeros(3, self.size, self.size), -1, i
        face = align_normalise(image, self.points[i], self.size, self.mean, self.std)
        if self.flip_prob > 0 and torch.rand(()) < self.flip_prob:  # App. A.2: the only augmentation
            face = face.flip(-1)
        return face, int(self.labels[i]), i


class LabelledFaces(AlignedFaces):
    """Training items as ``common.engine`` reads them: {"image", "label", "index"}; None for an unreadable file
    (dropped from its batch and counted)."""

    def __getitem__(self, i):
        image, label, index = super().__getitem__(i)
        return None if label < 0 else {"image": image, "label": label, "index": index}


def vggface2_training_set(root, *, split, keys, size, mean, std, flip_prob):
    """(LabelledFaces over ``keys`` (relative paths, a subset of the split), sorted class names)."""
    index = load_vggface2(root, split)
    order = np.argsort(index["paths"])
    keys = np.asarray(keys, dtype=str)
    pos = np.clip(np.searchsorted(index["paths"], keys, sorter=order), 0, len(order) - 1)
    rows = order[pos]
    missing = keys[index["paths"][rows] != keys]
    if len(missing) or not len(keys):
        raise ValueError(f"{root}: {len(missing)} of {len(keys)} subset keys are not in the {split} split "
                         f"(with landmarks), e.g. {missing[:3].tolist()}")
    classes, labels = np.unique(index["identities"][rows], return_inverse=True)
    faces = LabelledFaces(index["paths"][rows], index["points"][rows], labels, size=size, mean=mean, std=std,
                          flip_prob=flip_prob, root=os.path.join(root, split))
    return faces, classes.tolist()


def pack_paths(path):
    """(train.rec, train.idx, property) of an insightface pack folder, or of a ``prefix`` (``prefix.rec`` ...)."""
    if os.path.isdir(path):
        prefix, folder = os.path.join(path, "train"), path
    else:
        prefix, folder = (path[:-4] if path.endswith(".rec") else path), os.path.dirname(path)
    rec, idx = prefix + ".rec", prefix + ".idx"
    for p, what in ((rec, "RecordIO file"), (idx, "RecordIO index")):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{what} not found: {p} (expected an insightface pack: train.rec, train.idx)")
    return rec, idx, os.path.join(folder, "property")


def load_recordio(path):
    """Index of an insightface pack shaped like ``load_vggface2``'s: {"paths": record keys as str, "identities":
    labels as str, "missing_landmarks": 0}, plus "reader" and "labels" (int64)."""
    rec, idx, _ = pack_paths(path)
    reader = IndexedRecordReader(rec, idx)
    index = pack_index(reader)
    return {"paths": index["keys"].astype(str), "identities": index["labels"].astype(str), "missing_landmarks": 0,
            "reader": reader, "keys": index["keys"], "labels": index["labels"], "header": index["header"]}


def normalise(image, size, mean, std):
    """A uint8 3 x H x W face crop resized to ``size`` px when it differs (bilinear, antialiased) and
    normalised (x/255 - mean) / std; float32 3 x size x size."""
    face = image.float().div_(255.0)
    if face.shape[-2:] != (size, size):
        face = torch.nn.functional.interpolate(face[None], size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
    mean = torch.as_tensor(mean, dtype=face.dtype).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=face.dtype).view(3, 1, 1)
    return (face - mean) / std


class RecordFaces(torch.utils.data.Dataset):
    """Items of an insightface pack as ``LabelledFaces`` gives them: {"image", "label", "index"}; None for a
    record that does not decode (or whose header label disagrees with the index), dropped and counted.

    Holds the reader (its file opens lazily in each worker) and numpy arrays of offsets and labels."""

    def __init__(self, reader, offsets, raw_labels, labels, *, size, mean, std, flip_prob=0.0):
        self.reader, self.offsets, self.raw_labels = reader, np.asarray(offsets), np.asarray(raw_labels)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.size, self.mean, self.std, self.flip_prob = size, tuple(mean), tuple(std), flip_prob

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        try:
            header, data = unpack_record(self.reader.read_at(int(self.offsets[i])))
        except RecordIOError:
            return None
        image = load_rgb(io.BytesIO(data))
        if image is None or first_label(header) != self.raw_labels[i]:
            return None
        face = normalise(image, self.size, self.mean, self.std)
        if self.flip_prob > 0 and torch.rand(()) < self.flip_prob:  # App. A.2: the only augmentation
            face = face.flip(-1)
        return {"image": face, "label": int(self.labels[i]), "index": i}


def recordio_training_set(path, *, size, mean, std, flip_prob, keys=None, index=None):
    """(RecordFaces over the records ``keys`` (default all images) of the pack at ``path``, class names = the
    pack's labels as str, in numeric order); mirrors ``vggface2_training_set``. ``index``: a ``load_recordio``
    result to reuse."""
    index = index or load_recordio(path)
    rows = np.arange(len(index["keys"]))
    if keys is not None:
        try:
            wanted = np.asarray(keys).astype(np.int64).reshape(-1)
        except ValueError:
            raise ValueError(f"{path}: RecordIO subset keys must be record numbers, got {list(keys)[:3]}") from None
        rows = np.clip(np.searchsorted(index["keys"], wanted), 0, len(rows) - 1)
        missing = wanted[index["keys"][rows] != wanted]
        if len(missing) or not len(wanted):
            raise ValueError(f"{path}: {len(missing)} of {len(wanted)} subset keys are not image records of the "
                             f"pack, e.g. {missing[:3].tolist()}")
    classes, labels = np.unique(index["labels"][rows], return_inverse=True)
    reader = index["reader"]
    _, _, prop = pack_paths(path)
    if os.path.isfile(prop) and read_property(prop)[0] < len(classes):
        raise ValueError(f"{prop}: says {read_property(prop)[0]} classes, the pack's images have {len(classes)}")
    offsets = reader.offsets[np.searchsorted(reader.keys, index["keys"][rows])]
    faces = RecordFaces(reader, offsets, index["labels"][rows], labels, size=size, mean=mean, std=std,
                        flip_prob=flip_prob)
    return faces, [str(c) for c in classes]


def save_grid(faces, captions, mean, std, path, columns=8):
    """A PNG grid of normalised faces (N x 3 x S x S) with a caption drawn on each tile."""
    images = (faces * torch.as_tensor(std).view(1, 3, 1, 1) + torch.as_tensor(mean).view(1, 3, 1, 1)).clamp(0, 1)
    n, _, s, _ = images.shape
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * s, rows * s))
    draw = ImageDraw.Draw(canvas)
    for k in range(n):
        tile = Image.fromarray((images[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        x, y = (k % columns) * s, (k // columns) * s
        canvas.paste(tile, (x, y))
        draw.text((x + 2, y + 2), str(captions[k]), fill=(255, 255, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)


def check_recordio(root, size, out, n_show=32):
    """The dataset check of an insightface pack: counts, header ranges, property, undecodable records in
    a sample of ``n_show`` spread over the pack (all of it when small), and a grid of those faces."""
    index = load_recordio(root)
    faces, classes = recordio_training_set(root, size=size, mean=(0.0,) * 3, std=(1.0,) * 3, flip_prob=0.0,
                                           index=index)
    counts = np.bincount(faces.labels.numpy())
    pick = np.linspace(0, len(faces) - 1, min(n_show, len(faces))).round().astype(int)
    items = [faces[int(i)] for i in pick]
    good = [(it, classes[it["label"]]) for it in items if it is not None]
    _, _, prop = pack_paths(root)
    stats = {"images": len(faces), "identities": len(classes), "header_record": index["header"],
             "property": read_property(prop) if os.path.isfile(prop) else None,
             "images_per_identity": {"min": int(counts.min()), "median": float(np.median(counts)),
                                     "max": int(counts.max())},
             "sampled": len(items), "undecodable_in_sample": len(items) - len(good), "grid": out}
    if good:
        save_grid(torch.stack([it["image"] for it, _ in good]), [c for _, c in good], (0.0,) * 3, (1.0,) * 3, out)
    return stats


def check(dataset, root, split, size, out, n_show=32):
    """Read the dataset as training / evaluation would; print counts, write a sample grid, and
    report the alignment residual of the 5 points (px in the aligned crop; near 0 means the
    points and the template agree, large values flag bad landmark rows)."""
    if dataset == "recordio":
        return check_recordio(root, size, out, n_show)
    if dataset == "vggface2":
        index = load_vggface2(root, split)
        files = [os.path.join(root, split, p) for p in index["paths"]]
        points, captions = index["points"], index["identities"]
        counts = np.unique(index["identities"], return_counts=True)[1]
        stats = {"images": len(files), "identities": len(counts), "missing_landmarks": index["missing_landmarks"],
                 "images_per_identity": {"min": int(counts.min()), "median": float(np.median(counts)),
                                         "max": int(counts.max())}}
    else:
        from face_recognition.ijb import read_ijb_meta  # here: ijb.py imports this module
        meta = read_ijb_meta(root, dataset)
        files, points = [os.path.join(meta["image_root"], f) for f in meta["files"]], meta["points"]
        captions = [f"t{t} s{s:.2f}" for t, s in zip(meta["templates"], meta["faceness"])]
        stats = {"images": len(files), "templates": int(len(np.unique(meta["templates"]))),
                 "media": int(len(np.unique(meta["medias"]))), "pairs": int(len(meta["labels"])),
                 "genuine": int(meta["labels"].sum()),
                 "faceness_histogram": np.histogram(meta["faceness"], bins=np.linspace(0, 1, 11))[0].tolist()}
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    matrices = umeyama(pts, arcface_template(size).expand_as(pts))
    residual = alignment_residual(pts, matrices, size)
    round_trip = (apply_to_points(invert(matrices), apply_to_points(matrices, pts)) - pts).norm(dim=-1).max()
    stats.update({"alignment_residual_px": {"mean": float(residual.mean()), "max": float(residual.max())},
                  "alignment_round_trip_max_px": float(round_trip)})
    pick = np.linspace(0, len(files) - 1, min(n_show, len(files))).round().astype(int)
    faces = AlignedFaces([files[i] for i in pick], pts[pick], np.zeros(len(pick)), size=size,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    items = [faces[k] for k in range(len(pick))]
    stats["unreadable_in_grid"] = sum(label == -1 for _, label, _ in items)
    save_grid(torch.stack([face for face, _, _ in items]), [captions[i] for i in pick], (0.0,) * 3, (1.0,) * 3, out)
    stats["grid"] = out
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check a face recognition dataset (VGGFace2, IJB-B, IJB-C)")
    parser.add_argument("--check", action="store_true", required=True, help="run the dataset check")
    parser.add_argument("--dataset", required=True, choices=("vggface2", "ijbb", "ijbc", "recordio"),
                        help="recordio: an insightface pack folder (train.rec, train.idx, property)")
    parser.add_argument("--root", required=True, help="VGGFace2 root, the IJBB / IJBC folder, or a pack folder")
    parser.add_argument("--split", default="train", choices=tuple(LIST_FILES), help="VGGFace2 split")
    parser.add_argument("--size", type=int, default=112, help="aligned crop size (ArcFace template: 112)")
    parser.add_argument("--out", default=None, help="sample grid PNG (default: check_<dataset>.png)")
    args = parser.parse_args(argv)
    try:
        stats = check(args.dataset, args.root, args.split, args.size, args.out or f"check_{args.dataset}.png")
    except (FileNotFoundError, ValueError) as e:
        parser.exit(1, f"error: {e}\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
