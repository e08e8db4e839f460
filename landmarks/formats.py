"""Readers for the landmark datasets of paper §5.2 (300W, WFLW, AFLW-19, COFW-68) in their released layouts.

Every reader returns a ``Samples`` table: 0-based float landmarks in the ``common.transforms``
pixel convention, the crop box the community uses for the dataset, and the official split.
Formats, splits and counts: shared/research/anchors_landmarks_3d.md §1.1-1.4 (cited per reader).
Boxes (anchors §0.1, §1.1-1.4): the tight box of the GT landmarks (HRNet's CSVs for 300W, WFLW,
COFW) unless ``box="dataset"`` picks the box shipped with the dataset (WFLW rect, AFLWinfo
``bbox``, COFW-68 ``bboxes``); AFLW-19 crops from its AFLWinfo box by default (SAN's "GTB", FaRL).
"""
import glob
import json
import os
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.io

# Official split sizes (anchors §1.1, §1.3, §1.4, §1.2); WFLW subset sizes are [unverified] there.
OFFICIAL_COUNTS = {
    "300w": {"train": 3148, "common": 554, "challenging": 135, "full": 689, "private": 600},
    "wflw": {"train": 7500, "test": 2500, "largepose": 326, "expression": 314, "illumination": 698,
             "makeup": 206, "occlusion": 736, "blur": 773},
    "aflw19": {"train": 20000, "full": 4386, "frontal": 1165},
    "cofw68": {"test": 507},
}
N_POINTS = {"300w": 68, "wflw": 98, "aflw19": 19, "cofw68": 68}
DEFAULT_BOX = {"300w": "landmarks", "wflw": "landmarks", "aflw19": "dataset", "cofw68": "landmarks"}


class DatasetFormatError(ValueError):
    """A missing or malformed dataset file; the message names the file (and line)."""


class DatasetMissingError(DatasetFormatError):
    """A dataset folder or file that is not there at all (an optional split may be skipped)."""


@dataclass
class Samples:
    """One split of a dataset. images[i] is a file path or an (H, W[, 3]) uint8 array (COFW's .mat)."""
    dataset: str
    split: str
    keys: list
    images: list
    points: np.ndarray                      # (N, P, 2) float64, 0-based pixel centres
    boxes: np.ndarray                       # (N, 4) x1, y1, x2, y2: the crop box
    dataset_boxes: np.ndarray = None        # (N, 4) the box shipped with the dataset, if any
    visible: np.ndarray = None              # (N, P) bool, if the dataset marks visibility
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.keys)

    def select(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        pick = (lambda a: None if a is None else a[idx])
        return replace(self, keys=[self.keys[i] for i in idx], images=[self.images[i] for i in idx],
                       points=self.points[idx], boxes=self.boxes[idx],
                       dataset_boxes=pick(self.dataset_boxes), visible=pick(self.visible))


def _require(path, what):
    if not os.path.exists(path):
        raise DatasetMissingError(f"missing {what}: {path}")
    return path


def landmark_boxes(points):
    """Tight (N, 4) x1, y1, x2, y2 box of each face's landmarks (non-finite points ignored)."""
    return np.concatenate([np.nanmin(points, axis=1), np.nanmax(points, axis=1)], axis=1)


def _finish(dataset, split, keys, images, points, box, dataset_boxes=None, visible=None, meta=None):
    points = np.asarray(points, dtype=np.float64).reshape(len(keys), N_POINTS[dataset], 2)
    if box not in ("landmarks", "dataset"):
        raise ValueError(f"box must be 'landmarks' or 'dataset', got {box!r}")
    if box == "dataset" and dataset_boxes is None:
        raise ValueError(f"{dataset}: box='dataset' needs a box shipped with the dataset; use 'landmarks'")
    boxes = landmark_boxes(points) if box == "landmarks" else np.asarray(dataset_boxes, np.float64)
    return Samples(dataset, split, list(keys), list(images), points, boxes, dataset_boxes, visible,
                   meta or {})


# ---------------------------------------------------------------- 300W (anchors §1.1)
SPLITS_300W = {"train": ("afw", "helen/trainset", "lfpw/trainset"),
               "common": ("helen/testset", "lfpw/testset"), "challenging": ("ibug",),
               "full": ("helen/testset", "lfpw/testset", "ibug"),   # common first, then challenging
               "private": ("300W/01_Indoor", "300W/02_Outdoor")}


def read_pts(path):
    """(P, 2) 0-based points of an iBUG ``.pts`` file, whose coordinates are 1-based (menpo)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f]
    header = {}
    for number, line in enumerate(lines, 1):
        if line == "{":
            break
        if ":" not in line:
            raise DatasetFormatError(f"{path}:{number}: expected 'key: value' header, got {line!r}")
        name, value = line.split(":", 1)
        header[name.strip()] = value.strip()
    else:
        raise DatasetFormatError(f"{path}: no '{{' line opening the point list")
    try:
        n = int(header["n_points"])
    except (KeyError, ValueError):
        raise DatasetFormatError(f"{path}: header has no valid 'n_points' ({header})") from None
    first = number + 1
    body = lines[first - 1:first - 1 + n]
    points = []
    for offset, line in enumerate(body):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            points.append([float(parts[0]) - 1.0, float(parts[1]) - 1.0])
        except ValueError:
            raise DatasetFormatError(f"{path}:{first + offset}: expected 'x y', got {line!r}") from None
        if not np.isfinite(points[-1]).all():
            raise DatasetFormatError(f"{path}:{first + offset}: non-finite coordinate in {line!r}")
    closing = first + n
    if len(points) != n or len(lines) < closing or lines[closing - 1] != "}":
        raise DatasetFormatError(f"{path}:{closing}: expected {n} points then '}}'")
    return np.asarray(points, dtype=np.float64)


def load_300w(root, split, box="landmarks"):
    if split not in SPLITS_300W:
        raise ValueError(f"300W split {split!r} unknown; expected one of {sorted(SPLITS_300W)}")
    keys, images, points = [], [], []
    for folder in SPLITS_300W[split]:
        files = sorted(glob.glob(os.path.join(glob.escape(_require(os.path.join(root, folder),
                                                                    "300W folder")), "*.pts")))
        if not files:
            raise DatasetFormatError(f"no .pts files in {os.path.join(root, folder)}")
        for pts in files:
            stem = pts[:-4]
            image = next((stem + e for e in (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
                          if os.path.isfile(stem + e)), None)
            if image is None:
                raise DatasetFormatError(f"{pts}: no image next to it ({os.path.basename(stem)}.jpg/.png)")
            keys.append(f"{folder}/{os.path.basename(stem)}")
            images.append(image)
            points.append(read_pts(pts))
    bad = [k for k, p in zip(keys, points) if p.shape != (68, 2)]
    if bad:
        raise DatasetFormatError(f"300W: {bad[:5]} do not have 68 points")
    return _finish("300w", split, keys, images, points, box)


# ---------------------------------------------------------------- WFLW (anchors §1.3)
WFLW_ATTRIBUTES = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")


def load_wflw(root, split, box="landmarks"):
    """Splits: train, test, and the six test subsets by attribute column (pose, expression,
    illumination, make-up, occlusion, blur) of ``list_98pt_rect_attr_test.txt``."""
    if split not in ("train", "test") + WFLW_ATTRIBUTES:
        raise ValueError(f"WFLW split {split!r} unknown; expected train, test or one of {WFLW_ATTRIBUTES}")
    part = "train" if split == "train" else "test"
    path = _require(os.path.join(root, "WFLW_annotations", "list_98pt_rect_attr_train_test",
                                 f"list_98pt_rect_attr_{part}.txt"), "WFLW annotation file")
    keys, images, points, rects, attrs = [], [], [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 207:
                raise DatasetFormatError(f"{path}:{number}: expected 196 coordinates, 4 box values, "
                                         f"6 attributes and an image path (207 fields), got {len(tokens)}")
            try:
                values = np.asarray(tokens[:200], dtype=np.float64)
                flags = [int(t) for t in tokens[200:206]]
            except ValueError as e:
                raise DatasetFormatError(f"{path}:{number}: {e}") from None
            if not np.isfinite(values).all():
                raise DatasetFormatError(f"{path}:{number}: non-finite coordinate or box value")
            pts = values[:196].reshape(98, 2)
            cx, cy = pts.mean(0)
            keys.append(f"{tokens[206]}@{cx:.1f}_{cy:.1f}")            # FaRL keys faces this way
            images.append(os.path.join(root, "WFLW_images", tokens[206]))
            points.append(pts)
            rects.append(values[196:200])
            attrs.append(flags)
    attrs = np.asarray(attrs, dtype=np.int64).reshape(-1, 6)
    samples = _finish("wflw", split, keys, images, points, box, dataset_boxes=np.asarray(rects).reshape(-1, 4))
    if split in WFLW_ATTRIBUTES:
        samples = samples.select(np.flatnonzero(attrs[:, WFLW_ATTRIBUTES.index(split)] == 1))
    return samples


# ---------------------------------------------------------------- AFLW-19 (anchors §1.4)
def _aflw_train_count(root, n_faces):
    """20000 for the real file (24386 faces); a synthetic miniature states its own in manifest.json."""
    if n_faces > 20000:
        return 20000
    manifest = os.path.join(os.path.dirname(os.path.abspath(root)), "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            entry = json.load(f).get("datasets", {}).get("aflw19", {})
        if "train_count" in entry:
            return int(entry["train_count"])
    raise DatasetFormatError(f"{root}/AFLWinfo_release.mat has {n_faces} faces; the official split "
                             f"needs 24386 (train = ra[:20000])")


def _mat(path):
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:
        raise DatasetFormatError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it as v7 "
                                 f"(MATLAB: save(..., '-v7')) for scipy.io.loadmat") from None
    except (ValueError, OSError, TypeError) as e:
        raise DatasetFormatError(f"{path}: unreadable .mat file: {e}") from None


def _field(mat, name, path, shape=None):
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetFormatError(f"{path}: no variable {name!r} (has {found})")
    value = mat[name]
    if shape is not None and (value.ndim != len(shape) or any(s not in (None, v) for s, v in zip(shape, value.shape))):
        raise DatasetFormatError(f"{path}: {name} has shape {value.shape}, expected {shape}")
    return value


def load_aflw19(root, split, box="dataset"):
    """train = ra[:20000] - 1, full = ra[20000:] - 1, frontal = full faces with all 19 points
    visible (FaRL / 3FabRec definition). bbox is [left right top bottom]; coordinates are used
    as stored (FaRL reads them with no offset)."""
    if split not in ("train", "full", "frontal"):
        raise ValueError(f"AFLW-19 split {split!r} unknown; expected train, full or frontal")
    path = _require(os.path.join(root, "AFLWinfo_release.mat"), "AFLW-19 annotation file")
    mat = _mat(path)
    data = _field(mat, "data", path, (None, 38)).astype(np.float64)
    n = data.shape[0]
    bbox = _field(mat, "bbox", path, (n, 4)).astype(np.float64)
    mask = _field(mat, "mask_new", path, (n, 19))
    names = [str(np.asarray(c).reshape(-1)[0]) for c in _field(mat, "nameList", path).reshape(-1)]
    ra = _field(mat, "ra", path).reshape(-1).astype(np.int64) - 1
    if len(names) != n or sorted(ra.tolist()) != list(range(n)):
        raise DatasetFormatError(f"{path}: nameList ({len(names)}) / ra must cover the {n} faces")
    n_train = _aflw_train_count(root, n)
    idx = ra[:n_train] if split == "train" else ra[n_train:]
    if split == "frontal":
        idx = idx[np.all(mask[idx] == 1, axis=1)]
    points = np.stack([data[idx, :19], data[idx, 19:]], axis=-1)
    boxes = bbox[idx][:, [0, 2, 1, 3]]                                      # -> x1, y1, x2, y2
    images = [os.path.join(root, "data", "flickr", names[i]) for i in idx]
    keys = [f"{names[i]}#{i}" for i in idx]
    return _finish("aflw19", split, keys, images, points, box, dataset_boxes=boxes,
                   visible=mask[idx] == 1)


# ---------------------------------------------------------------- COFW-68 (anchors §1.2)
def load_cofw68(root, split="test", box="landmarks"):
    """Test only (507): ``COFW68_Data/test_annotations/{i}_points.mat`` (Points 68 x 2, 1-based;
    Occ 1 = occluded), ``cofw68_test_bboxes.mat`` ([x y w h]), image i = IsT{i} of COFW_test.mat."""
    if split != "test":
        raise ValueError(f"COFW-68 has only the 'test' split (got {split!r}); train on 300W")
    folder = os.path.join(root, "COFW68_Data")
    box_path = _require(os.path.join(folder, "cofw68_test_bboxes.mat"), "COFW-68 box file")
    xywh = _field(_mat(box_path), "bboxes", box_path, (None, 4)).astype(np.float64)
    image_path = _require(os.path.join(root, "COFW_test.mat"), "COFW test images (COFW.zip)")
    cells = _field(_mat(image_path), "IsT", image_path).reshape(-1)
    if len(cells) != len(xywh):
        raise DatasetFormatError(f"{image_path}: {len(cells)} images but {len(xywh)} boxes in {box_path}")
    points, occluded = [], []
    for i in range(1, len(xywh) + 1):
        path = _require(os.path.join(folder, "test_annotations", f"{i}_points.mat"), "COFW-68 annotation")
        mat = _mat(path)
        points.append(_field(mat, "Points", path, (68, 2)).astype(np.float64) - 1.0)
        occluded.append(_field(mat, "Occ", path).reshape(-1).astype(bool))
    boxes = np.concatenate([xywh[:, :2] - 1.0, xywh[:, :2] - 1.0 + xywh[:, 2:]], axis=1)
    keys = [f"COFW_test#{i}" for i in range(1, len(xywh) + 1)]
    images = [np.asarray(c) for c in cells]
    return _finish("cofw68", split, keys, images, points, box, dataset_boxes=boxes,
                   visible=~np.stack(occluded))


LOADERS = {"300w": load_300w, "wflw": load_wflw, "aflw19": load_aflw19, "cofw68": load_cofw68}


def load_split(dataset, root, split, box="default"):
    """``Samples`` of ``split`` of ``dataset`` under ``root``; a missing root is one clear error."""
    if dataset not in LOADERS:
        raise ValueError(f"unknown landmark dataset {dataset!r}; expected one of {sorted(LOADERS)}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{dataset} dataset root not found: {root}")
    return LOADERS[dataset](root, split, box=DEFAULT_BOX[dataset] if box == "default" else box)
