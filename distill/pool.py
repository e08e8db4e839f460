"""The unlabelled image pool of self-distillation (paper §3.5, §4 "Self-distillation ...", Fig. 3).

The paper forms "a large pool of unlabelled data ... by 300W, AFLW, WFLW and COFW". The pool is a
text file, one face per line, tab-separated: ``source  key  path  box`` where box is
``x1 y1 x2 y2`` (0-based pixels, enlarged by ``data.box_scale`` at training time like a labelled
crop) or ``-`` (the whole image, taken as it is). A line holding only a path is also accepted
(source ``list``, whole image), so any hand-made list of face crops works; relative paths are
relative to the list's folder. Lines starting with ``#`` are comments (the builder records its
sources and exclusions there).

    python -m distill.pool --out LIST --dataset 300w=ROOT --dataset aflw19=ROOT --dataset wflw=ROOT \
        --dataset cofw=ROOT [--dataset folder=DIR] [--exclude-test-of 300w] [--box dataset|landmarks]

Only training images enter the pool, so test images are excluded by construction (300W: afw,
helen/trainset, lfpw/trainset; WFLW: train; AFLW-19: ra[:20000]; COFW: COFW_train.mat, whose
images are extracted to ``LIST.images/cofw/``; ``folder``: every image under DIR). Datasets also
overlap (shared/research/anchors_landmarks_3d.md §1.6), so the test images of every benchmark named
(with ``--dataset`` or ``--exclude-test-of``) are looked for in the pool by path and by content
(``distill.leakage``) and dropped. Boxes (anchors §6, item 3: crops of unlabelled images cannot come
from their landmarks): ``--box dataset`` (default) takes the boxes shipped with each dataset: 300W
``bb_detector`` of ``Bounding Boxes/bounding_boxes_*.mat`` (1-based), the WFLW detection rect, the
AFLWinfo ``bbox``, COFW ``bboxesTr`` ([x y w h], 1-based); ``--box landmarks`` takes the tight box
of the annotated points, the framing the teacher was trained on.
"""
import argparse
import os
from dataclasses import dataclass, field

import numpy as np
import scipy.io
from PIL import Image

from landmarks import formats

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SOURCES = ("300w", "wflw", "aflw19", "cofw", "folder")
HEADER = "# facerep unlabelled pool (python -m distill.pool): source<TAB>key<TAB>path<TAB>x1 y1 x2 y2 | -"


class PoolFormatError(ValueError):
    """A malformed pool list; the message names the file and line."""


@dataclass
class Pool:
    """Pool entries; boxes[i] is NaN where the whole image is the face crop."""
    sources: list
    keys: list
    paths: list
    boxes: np.ndarray                       # (N, 4) float64 x1, y1, x2, y2
    comments: list = field(default_factory=list)

    def __len__(self):
        return len(self.paths)

    def select(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        return Pool([self.sources[i] for i in idx], [self.keys[i] for i in idx], [self.paths[i] for i in idx],
                    self.boxes[idx].reshape(-1, 4), list(self.comments))

    @staticmethod
    def concat(pools):
        pools = list(pools)
        return Pool([s for p in pools for s in p.sources], [k for p in pools for k in p.keys],
                    [q for p in pools for q in p.paths],
                    np.concatenate([p.boxes for p in pools]).reshape(-1, 4) if pools else np.zeros((0, 4)),
                    [c for p in pools for c in p.comments])


def read_pool(path):
    """The ``Pool`` of the list file at ``path`` (format: module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"unlabelled pool list not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    sources, keys, paths, boxes, comments = [], [], [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if line.startswith("#"):
                comments.append(line)
                continue
            fields = line.split("\t")
            if len(fields) == 1:
                source, key, image, box = "list", fields[0].strip(), fields[0].strip(), "-"
            elif len(fields) == 4:
                source, key, image, box = fields
            else:
                raise PoolFormatError(f"{path}:{number}: expected 'path' or 4 tab-separated fields "
                                      f"(source, key, path, box), got {len(fields)}")
            if box.strip() == "-":
                values = [np.nan] * 4
            else:
                try:
                    values = [float(v) for v in box.split()]
                except ValueError:
                    values = []
                if len(values) != 4 or not (values[2] > values[0] and values[3] > values[1]):
                    raise PoolFormatError(f"{path}:{number}: box must be 'x1 y1 x2 y2' with x2 > x1, y2 > y1 "
                                          f"or '-', got {box!r}")
            sources.append(source)
            keys.append(f"{source}/{key}")
            paths.append(image if os.path.isabs(image) else os.path.join(base, image))
            boxes.append(values)
    duplicates = len(keys) - len(set(keys))
    if duplicates:
        raise PoolFormatError(f"{path}: {duplicates} duplicate source/key entries")
    return Pool(sources, keys, paths, np.asarray(boxes, np.float64).reshape(-1, 4), comments)


def write_pool(path, pool, comments=()):
    """Write ``pool`` as a list file (atomically); keys are written without their source prefix."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in (HEADER, *comments):
            f.write(f"# {line.lstrip('# ')}\n" if not line.startswith("#") else f"{line}\n")
        for source, key, image, box in zip(pool.sources, pool.keys, pool.paths, pool.boxes):
            if any(c in image for c in "\t\n"):
                raise ValueError(f"pool path contains a tab or newline: {image!r}")
            text = "-" if np.isnan(box).any() else " ".join(f"{v:.2f}" for v in box)
            f.write(f"{source}\t{key.split('/', 1)[1] if key.startswith(source + '/') else key}\t{image}\t{text}\n")
    os.replace(tmp, path)


def take(pool, *, amount, reference_size, seed):
    """The first ``round(amount * reference_size)`` entries (all for ``amount=None``) in pool order.

    Pool order keeps the sources in the order they first appear in the list and, inside a source,
    permutes its sorted keys with numpy Generator(seed): with 300W listed first, ``amount=1.0`` is
    300W's training set (Fig. 3 left: "100% corresponds to 300W"), a larger amount adds images of
    the next sources, and a smaller amount's images are contained in a larger one's.
    Returns (entries, requested count or None).
    """
    order = []
    for source in dict.fromkeys(pool.sources):
        members = [i for i, s in enumerate(pool.sources) if s == source]
        members.sort(key=lambda i: pool.keys[i])
        order.extend(np.asarray(members)[np.random.default_rng(seed).permutation(len(members))].tolist())
    if amount is None:
        return pool.select(order), None
    if amount < 0:
        raise ValueError(f"unlabeled.amount must be >= 0 or null, got {amount}")
    wanted = int(round(amount * reference_size))
    return pool.select(order[:wanted]), wanted


# ---------------------------------------------------------------- sources
def _bb_detector_300w(root, keys, images):
    """(N, 4) 0-based ``bb_detector`` boxes of 300W training images, matched by image name."""
    boxes = np.full((len(keys), 4), np.nan)
    for folder, name in (("afw", "afw"), ("helen/trainset", "helen_trainset"), ("lfpw/trainset", "lfpw_trainset")):
        mat_path = os.path.join(root, "Bounding Boxes", f"bounding_boxes_{name}.mat")
        if not os.path.isfile(mat_path):
            raise formats.DatasetFormatError(f"missing 300W detector boxes: {mat_path} (use --box landmarks "
                                             f"to crop from the annotated points instead)")
        try:
            entries = scipy.io.loadmat(mat_path)["bounding_boxes"].reshape(-1)
            table = {str(e[0, 0]["imgName"].reshape(-1)[0]): np.asarray(e[0, 0]["bb_detector"], np.float64).reshape(4)
                     for e in entries}
        except (KeyError, IndexError, ValueError, TypeError, NotImplementedError) as e:
            raise formats.DatasetFormatError(f"{mat_path}: expected bounding_boxes cells with imgName and "
                                             f"bb_detector ({e})") from None
        for i, (key, image) in enumerate(zip(keys, images)):
            if key.startswith(folder + "/"):
                name_i = os.path.basename(image)
                if name_i not in table:
                    raise formats.DatasetFormatError(f"{mat_path}: no bb_detector for {name_i}")
                boxes[i] = table[name_i] - 1.0
    return boxes


def _cofw_train(root, extract_dir, box):
    """COFW_train.mat (IsTr images, bboxesTr [x y w h] 1-based, phisTr: 29 x, 29 y, 29 occlusion)."""
    path = os.path.join(root, "COFW_train.mat")
    if not os.path.isfile(path):
        raise formats.DatasetFormatError(f"missing COFW training file: {path} (from COFW.zip)")
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:
        raise formats.DatasetFormatError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it as v7 "
                                         f"(MATLAB: save(..., '-v7')) for scipy.io.loadmat") from None
    missing = [k for k in ("IsTr", "bboxesTr", "phisTr") if k not in mat]
    if missing:
        raise formats.DatasetFormatError(f"{path}: no variable(s) {missing}")
    cells, xywh = mat["IsTr"].reshape(-1), np.asarray(mat["bboxesTr"], np.float64).reshape(-1, 4)
    phis = np.asarray(mat["phisTr"], np.float64)
    if not len(cells) == len(xywh) == len(phis):
        raise formats.DatasetFormatError(f"{path}: {len(cells)} images, {len(xywh)} boxes, {len(phis)} shapes")
    os.makedirs(extract_dir, exist_ok=True)
    paths = []
    for i, cell in enumerate(cells, 1):
        target = os.path.join(extract_dir, f"{i:05d}.png")
        if not os.path.isfile(target):
            Image.fromarray(np.asarray(cell, dtype=np.uint8)).save(target + ".tmp.png")
            os.replace(target + ".tmp.png", target)
        paths.append(target)
    if box == "dataset":
        boxes = np.concatenate([xywh[:, :2] - 1.0, xywh[:, :2] - 1.0 + xywh[:, 2:]], axis=1)
    else:
        n = phis.shape[1] // 3
        points = np.stack([phis[:, :n], phis[:, n:2 * n]], axis=-1) - 1.0
        boxes = formats.landmark_boxes(points)
    return [f"COFW_train#{i}" for i in range(1, len(cells) + 1)], paths, boxes


def _folder(root):
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    found = []
    for folder, _, files in os.walk(root):
        found.extend(os.path.join(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    found.sort()
    keys = [os.path.relpath(p, root) for p in found]
    return keys, found, np.full((len(found), 4), np.nan)


def source_pool(source, root, *, box="dataset", extract_dir=None):
    """The training images of one source as a ``Pool`` (paths absolute)."""
    if source not in SOURCES:
        raise ValueError(f"unknown pool source {source!r}; expected one of {SOURCES}")
    if box not in ("dataset", "landmarks"):
        raise ValueError(f"box must be 'dataset' or 'landmarks', got {box!r}")
    root = os.path.abspath(root)
    if source == "folder":
        keys, paths, boxes = _folder(root)
    elif source == "cofw":
        keys, paths, boxes = _cofw_train(root, extract_dir or os.path.join(root, "COFW_train_images"), box)
    else:
        samples = formats.load_split(source, root, "train", "landmarks" if source == "300w" else box)
        keys, paths, boxes = samples.keys, [os.path.abspath(p) for p in samples.images], samples.boxes
        if source == "300w" and box == "dataset":
            boxes = _bb_detector_300w(root, keys, paths)
    return Pool([source] * len(keys), [f"{source}/{k}" for k in keys], list(paths),
                np.asarray(boxes, np.float64).reshape(-1, 4))


def main(argv=None):
    from distill import leakage
    parser = argparse.ArgumentParser(prog="python -m distill.pool", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the list file to write")
    parser.add_argument("--dataset", action="append", default=[], metavar="SOURCE=ROOT",
                        help=f"a pool source, repeatable, in pool order; SOURCE in {SOURCES}")
    parser.add_argument("--exclude-test-of", action="append", default=[], metavar="DATASET[=ROOT]",
                        help="also exclude this benchmark's test images (root defaults to its --dataset root)")
    parser.add_argument("--box", default="dataset", choices=("dataset", "landmarks"),
                        help="crop boxes: shipped with the dataset (default) or the annotated points' tight box")
    args = parser.parse_args(argv)
    if not args.dataset:
        parser.error("give at least one --dataset SOURCE=ROOT")
    roots = {}
    for item in args.dataset:
        source, _, root = item.partition("=")
        if not root or source not in SOURCES:
            parser.error(f"--dataset {item!r}: expected SOURCE=ROOT with SOURCE in {SOURCES}")
        roots[source] = root
    excluded = {s: r for s, r in roots.items() if s in leakage.TEST_SPLITS}
    for item in args.exclude_test_of:
        name, _, root = item.partition("=")
        if name not in leakage.TEST_SPLITS:
            parser.error(f"--exclude-test-of {name!r}: expected one of {sorted(leakage.TEST_SPLITS)}")
        if not (root or name in roots):
            parser.error(f"--exclude-test-of {name}: give its root ({name}=ROOT) or --dataset {name}=ROOT")
        excluded[name] = root or roots[name]
    try:
        pools = [source_pool(s, r, box=args.box, extract_dir=f"{args.out}.images/{s}") for s, r in roots.items()]
        pool = Pool.concat(pools)
        index = leakage.ExcludedImages.build(excluded)
    except (formats.DatasetFormatError, FileNotFoundError) as e:
        raise SystemExit(f"distill.pool: {e}")
    leaks = leakage.find_leaks(pool.paths, index)
    drop = {i for i, _, _ in leaks}
    for i, test, how in leaks[:20]:
        print(f"dropped {pool.paths[i]}: {how} {test}")
    kept = pool.select([i for i in range(len(pool)) if i not in drop])
    comments = [f"source {s}={os.path.abspath(r)} images: {sum(1 for x in pool.sources if x == s)}"
                for s, r in roots.items()]
    comments.append(f"box: {args.box}")
    comments += [f"excluded test images of {name}={os.path.abspath(r)}: {index.counts[name]} "
                 f"(splits {', '.join(leakage.TEST_SPLITS[name])})" for name, r in excluded.items()]
    comments.append(f"dropped {len(drop)} entries found among those test images (by path or content)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_pool(args.out, kept, comments)
    print(f"wrote {len(kept)} unlabelled faces to {args.out} ({len(drop)} test-image copies dropped)")


if __name__ == "__main__":
    main()
