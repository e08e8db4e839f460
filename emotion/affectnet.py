"""AffectNet annotation lists (paper App. D.1, Table 12): expression classes, valence, arousal, face box.

Format (shared/research/anchors_recog_au_emotion.md §5.1): ``Manually_Annotated_file_lists/
{training,validation}.csv`` with header ``subDirectory_filePath,face_x,face_y,face_width,face_height,
facial_landmarks,expression,valence,arousal``; the path is relative to ``Manually_Annotated_Images/``,
the box is (x, y, w, h) in the image, landmarks are 68 points in one string ``x1;y1;x2;y2;...``.
Expression codes: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 No-Face. Valence / arousal lie in [-1, 1]; -2 is the "not annotated" sentinel.

Masking rules (stated once, applied here):
- rows with expression 8, 9 or 10 are dropped (no basic-emotion label), and with ``num_classes=7``
  also rows with 7 (Contempt), as EmoNet / the community do (§5.1-5.2);
- a kept row whose valence or arousal is -2 keeps its class label but its V/A are masked
  (``va_valid`` False: excluded from the V/A loss and metrics);
- rows with a non-positive face width or height are dropped (3FabRec's rule: no usable image).
Anything else that breaks the format raises naming the file and line.
"""
import csv
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


class AnnotationError(ValueError):
    """A malformed AffectNet list file (the message names the file and line)."""


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
    if code != round(code) or not 0 <= code <= 10:
        raise AnnotationError(f"{path}:{line}: expression {row[6]!r} is not a code 0-10")
    for name, v in zip(("valence", "arousal"), va):
        if not (-1.0 <= v <= 1.0 or v == VA_SENTINEL):
            raise AnnotationError(f"{path}:{line}: {name} {v} outside [-1, 1] and not the -2 sentinel")
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


def read_affectnet_list(path, num_classes=8):
    """Parse one AffectNet list file into arrays, applying the masking rules of the module docstring.

    Returns a dict: ``paths`` (list of str, relative to Manually_Annotated_Images), ``boxes`` (N, 4)
    x1, y1, x2, y2; ``landmarks`` (N, 68, 2) (NaN when absent); ``expression`` (N,) int64;
    ``valence``, ``arousal`` (N,) float32; ``va_valid`` (N,) bool; ``dropped`` {reason: count}.
    """
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"AffectNet list file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise AnnotationError(f"{path}:1: header must be {','.join(HEADER)}, got {header}")
        rows = [(reader.line_num, _parse_row(row, path, reader.line_num)) for row in reader if row]
    dropped = {"no_basic_emotion(8-10)": 0, "contempt(7-class)": 0, "empty_box": 0}
    keep = []
    for _, (rel, box, pts, code, va) in rows:
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
