"""AffectNet annotations (paper App. D.1, Table 12): expression classes, valence, arousal, face box, in two releases.

CSV release (shared/research/anchors_recog_au_emotion.md §5.1): ``Manually_Annotated_file_lists/
{training,validation}.csv`` with header ``subDirectory_filePath,face_x,face_y,face_width,face_height,
facial_landmarks,expression,valence,arousal``; the path is relative to ``Manually_Annotated_Images/``,
the box is (x, y, w, h) in the image, landmarks are 68 points in one string ``x1;y1;x2;y2;...``.
Expression codes: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 No-Face. Valence / arousal lie in [-1, 1]; -2 is the "not annotated" sentinel.

Per-image ``.npy`` release (the 8-label "AffectNet8Labels" / AffectNet-HQ distribution used by many repos):
``train_set/`` and ``val_set/``, each with ``images/<id>.jpg`` (face crops, 224 x 224) and ``annotations/
<id>_exp.npy``, ``<id>_val.npy``, ``<id>_aro.npy``, ``<id>_lnd.npy``. Expression, valence and arousal are
0-d arrays of unicode strings (``'<U..'``, e.g. ``'1'``, ``'0.785714'``); ``_lnd`` holds 136 floats, x and y
of the 68 points in turn, in the crop's pixels. Checked against armand-07/emotion_recognition
``notebooks/data_exploration_raw_AffectNet.ipynb`` (dtypes, sizes; 287,651 train / 3,999 val ids, four files
per id, images 224 px) and the loaders quoted by it (``int(np.load(..._exp.npy))``, ``float(np.load(
..._val.npy))``). Numeric 0-d arrays are accepted too. That release holds codes 0-7 only, but the rules
below are applied all the same. The image is already the face crop, so its box is the whole image (NaN in
``boxes``; ``emotion.data`` crops the whole image with the same ``box_scale`` as a CSV box).

Masking rules (stated once, applied here):
- rows with expression 8, 9 or 10 are dropped (no basic-emotion label), and with ``num_classes=7``
  also rows with 7 (Contempt), as EmoNet / the community do (§5.1-5.2);
- a kept row whose valence or arousal is -2 keeps its class label but its V/A are masked
  (``va_valid`` False: excluded from the V/A loss and metrics);
- rows with a non-positive face width or height are dropped (3FabRec's rule: no usable image).
Anything else that breaks the format raises naming the file (and line, for the CSV lists).
"""
import csv
import io
import os

import numpy as np

HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
CLASS_NAMES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
DROPPED_CODES = (8, 9, 10)  # None, Uncertain, No-Face
VA_SENTINEL = -2.0
SPLIT_FILES = {"train": "training.csv", "val": "validation.csv"}
LIST_FOLDER = "Manually_Annotated_file_lists"
IMAGE_FOLDER = "Manually_Annotated_Images"
NPY_SPLIT_FOLDERS = {"train": "train_set", "val": "val_set"}
NPY_IMAGE_FOLDER, NPY_ANNOTATION_FOLDER = "images", "annotations"
LAYOUTS = ("auto", "csv", "npy")


class AnnotationError(ValueError):
    """A malformed AffectNet list file (the message names the file and line)."""


def _check_code(where, code, text):
    """Raise naming ``where`` unless ``code`` is an expression code 0-10 (§5.1)."""
    if code != round(code) or not 0 <= code <= 10:
        raise AnnotationError(f"{where}: expression {text!r} is not a code 0-10")


def _check_va(where, name, value):
    """Raise naming ``where`` unless valence / arousal ``value`` lies in [-1, 1] or is the -2 sentinel (§5.1)."""
    if not (-1.0 <= value <= 1.0 or value == VA_SENTINEL):
        raise AnnotationError(f"{where}: {name} {value} outside [-1, 1] and not the -2 sentinel")


def _parse_row(row, path, line, num_points=68):
    if len(row) != len(HEADER):
        raise AnnotationError(f"{path}:{line}: expected {len(HEADER)} columns, got {len(row)}")
    try:
        box = [float(v) for v in row[1:5]]
        code = float(row[6])
        va = (float(row[7]), float(row[8]))
    except ValueError:
        raise AnnotationError(f"{path}:{line}: non-numeric box, expression, valence or arousal "
                              f"in {row[1:5] + row[6:]}") from None
    _check_code(f"{path}:{line}", code, row[6])
    for name, v in zip(("valence", "arousal"), va):
        _check_va(f"{path}:{line}", name, v)
    text = row[5].strip()
    if text:
        try:
            pts = [float(v) for v in text.split(";") if v.strip()]
        except ValueError:
            raise AnnotationError(f"{path}:{line}: facial_landmarks is not ';'-separated numbers") from None
        if len(pts) != 2 * num_points:
            raise AnnotationError(f"{path}:{line}: facial_landmarks has {len(pts)} numbers, "
                                  f"expected {2 * num_points}")
    else:
        pts = [float("nan")] * (2 * num_points)
    if not row[0].strip():
        raise AnnotationError(f"{path}:{line}: empty subDirectory_filePath")
    return row[0].strip(), box, pts, int(code), va


def _check_num_classes(num_classes):
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")


def read_affectnet_list(path, num_classes=8):
    """Parse one AffectNet list file into arrays, applying the masking rules of the module docstring.

    Returns a dict: ``paths`` (list of str, relative to Manually_Annotated_Images), ``boxes`` (N, 4)
    x1, y1, x2, y2; ``landmarks`` (N, 68, 2) (NaN when absent); ``expression`` (N,) int64;
    ``valence``, ``arousal`` (N,) float32; ``va_valid`` (N,) bool; ``dropped`` {reason: count}.
    """
    _check_num_classes(num_classes)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"AffectNet list file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise AnnotationError(f"{path}:1: header must be {','.join(HEADER)}, got {header}")
        rows = [_parse_row(row, path, reader.line_num) for row in reader if row]
    return _apply_rules(rows, num_classes)


def _apply_rules(rows, num_classes):
    """The table of parsed rows (path, box x y w h, 136 numbers, code, (v, a)) after the masking rules above."""
    dropped = {"no_basic_emotion(8-10)": 0, "contempt(7-class)": 0, "empty_box": 0}
    keep = []
    for rel, box, pts, code, va in rows:
        if code in DROPPED_CODES:
            dropped["no_basic_emotion(8-10)"] += 1
        elif code >= num_classes:
            dropped["contempt(7-class)"] += 1
        elif box[2] <= 0 or box[3] <= 0:
            dropped["empty_box"] += 1
        else:
            keep.append((rel, box, pts, code, va))
    n = len(keep)
    boxes = np.array([b for _, b, _, _, _ in keep], dtype=np.float64).reshape(n, 4)
    boxes[:, 2:] += boxes[:, :2]                                          # (x, y, w, h) -> (x1, y1, x2, y2)
    va = np.array([v for *_, v in keep], dtype=np.float32).reshape(n, 2)
    return {
        "paths": [k[0] for k in keep],
        "boxes": boxes,
        "landmarks": np.array([k[2] for k in keep], dtype=np.float32).reshape(n, 68, 2),
        "expression": np.array([k[3] for k in keep], dtype=np.int64),
        "valence": va[:, 0], "arousal": va[:, 1],
        "va_valid": (va != VA_SENTINEL).all(axis=1),
        "dropped": dropped,
    }


def list_path(root, split):
    """The list file of ``split`` ("train" -> training.csv, "val" -> validation.csv) under ``root``."""
    if split not in SPLIT_FILES:
        raise ValueError(f"AffectNet split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    return os.path.join(root, LIST_FOLDER, SPLIT_FILES[split])


_NPY_HEADERS = {}                                                         # header bytes -> (shape, fortran, dtype)


def _read_npy(path):
    """``np.load(path, allow_pickle=False)`` for small .npy files, each distinct header parsed once (numpy's
    header parser dominates np.load's time on the release's 1.15 million four-value files)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY" or len(data) < 12 or data[6] not in (1, 2, 3):
        raise ValueError("no .npy magic and version")
    start = 10 if data[6] == 1 else 12
    end = start + int.from_bytes(data[8:start], "little")
    header = data[:end]
    if header not in _NPY_HEADERS:
        buf = io.BytesIO(header)
        version = np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _NPY_HEADERS[header] = read(buf)
    shape, fortran, dtype = _NPY_HEADERS[header]
    if dtype.hasobject:
        raise ValueError("holds pickled Python objects")
    count = int(np.prod(shape))
    if len(data) < end + count * dtype.itemsize:
        raise ValueError(f"cut short: {len(data) - end} data bytes for {count} x {dtype}")
    return np.frombuffer(data, dtype, count, end).reshape(shape, order="F" if fortran else "C")


def _npy_numbers(path, size):
    """The ``size`` numbers held by one annotation ``.npy`` (unicode / byte strings or numbers); raises naming it."""
    try:
        array = _read_npy(path)
    except (OSError, ValueError, EOFError) as e:                         # not .npy, pickled objects, cut short
        raise AnnotationError(f"{path}: not a readable .npy array ({e})") from None
    if array.size != size or array.dtype.kind not in "USiuf":
        raise AnnotationError(f"{path}: holds {array.size} {array.dtype} value(s), expected {size} number(s)")
    try:
        return array.reshape(-1).astype(np.float64)
    except ValueError:
        raise AnnotationError(f"{path}: not a number: {array.reshape(-1)[:3].tolist()}") from None


def _npy_sample(folder, sample, names, num_points=68):
    """(image name, NaN box, 136 numbers, code, (v, a)) of one id of the per-image release."""
    path = {f: os.path.join(folder, f"{sample}_{f}.npy") for f in ("exp", "val", "aro", "lnd")}
    for f in ("val", "aro"):
        if f"{sample}_{f}.npy" not in names:
            raise AnnotationError(f"{path[f]}: missing (every <id>_exp.npy needs <id>_val.npy and <id>_aro.npy)")
    code = float(_npy_numbers(path["exp"], 1)[0])
    _check_code(path["exp"], code, code)
    va = (float(_npy_numbers(path["val"], 1)[0]), float(_npy_numbers(path["aro"], 1)[0]))
    for f, name, v in zip(("val", "aro"), ("valence", "arousal"), va):
        _check_va(path[f], name, v)
    pts = (_npy_numbers(path["lnd"], 2 * num_points).tolist() if f"{sample}_lnd.npy" in names
           else [float("nan")] * (2 * num_points))
    return f"{sample}.jpg", [float("nan")] * 4, pts, int(code), va


def _id_order(sample):
    """Numeric ids in numeric order (the release's ``0 ... N-1``), any other name after them, sorted."""
    return (0, int(sample), "") if sample.isdigit() else (1, 0, sample)


def read_affectnet_npy(split_dir, num_classes=8):
    """Parse one split of the per-image ``.npy`` release (module docstring) into ``read_affectnet_list``'s table.

    One sample per ``annotations/<id>_exp.npy``, ids in numeric order; ``paths`` are ``<id>.jpg`` relative
    to ``split_dir/images``; ``boxes`` are NaN (the whole image is the face crop); a missing ``_lnd.npy``
    gives NaN landmarks, a missing ``_val`` / ``_aro`` or a malformed file raises naming the file.
    """
    _check_num_classes(num_classes)
    folder = os.path.join(split_dir, NPY_ANNOTATION_FOLDER)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"AffectNet annotation folder not found: {folder}")
    names = set(os.listdir(folder))
    samples = sorted((n[:-len("_exp.npy")] for n in names if n.endswith("_exp.npy")), key=_id_order)
    if not samples:
        raise AnnotationError(f"{folder}: no <id>_exp.npy files")
    return _apply_rules([_npy_sample(folder, s, names) for s in samples], num_classes)


def detect_layout(root):
    """"csv" (``Manually_Annotated_file_lists/``) or "npy" (``train_set/`` / ``val_set/`` with ``annotations/``)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    csv_found = os.path.isdir(os.path.join(root, LIST_FOLDER))
    npy_found = any(os.path.isdir(os.path.join(root, f, NPY_ANNOTATION_FOLDER)) for f in NPY_SPLIT_FOLDERS.values())
    if csv_found and npy_found:
        raise ValueError(f"{root} holds both AffectNet releases ({LIST_FOLDER}/ and train_set/ val_set/): "
                         "choose one with layout='csv' or layout='npy' (emotion.data --layout)")
    if not (csv_found or npy_found):
        raise FileNotFoundError(f"{root}: no AffectNet annotations: expected {LIST_FOLDER}/ (CSV release) or "
                                "train_set/annotations/, val_set/annotations/ (per-image .npy release)")
    return "csv" if csv_found else "npy"


def read_split(root, split, num_classes=8, layout="auto"):
    """(table, folder its ``paths`` are relative to, annotation source) of ``split`` in either release."""
    if layout not in LAYOUTS:
        raise ValueError(f"AffectNet layout must be one of {LAYOUTS}, got {layout!r}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "csv":
        source = list_path(root, split)
        return read_affectnet_list(source, num_classes), os.path.join(root, IMAGE_FOLDER), source
    if split not in NPY_SPLIT_FOLDERS:
        raise ValueError(f"AffectNet split must be one of {sorted(NPY_SPLIT_FOLDERS)}, got {split!r}")
    source = os.path.join(root, NPY_SPLIT_FOLDERS[split])
    return read_affectnet_npy(source, num_classes), os.path.join(source, NPY_IMAGE_FOLDER), source
