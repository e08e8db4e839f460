"""AU-intensity label files and protocols of DISFA and BP4D/FERA2015 (paper §5.3, Tables 7, 8, 10, 11).

Facts (shared/research/anchors_recog_au_emotion.md §3):
- DISFA (§3.1): ``ActionUnit_Labels/SNxxx/SNxxx_auN.txt``, one file per AU in DISFA_AUS, each line
  ``frame,intensity`` (comma, no header, integer 0-5), 4,845 labelled frames per subject, 27 subjects.
  Folds: (A) "frl" = the fixed train/valid/test lists of the paper's group (ESanchezLozano/
  Action-Units-Heatmaps issue #10), scored on the pooled test predictions; (B) "jaa" = the
  JAA-Net-lineage 3-part split (CVI-SZU/ME-GraphAU tool/DISFA_image_label_process.py).
- BP4D / FERA2015 (§3.2): ``AU Intensity Codes3.0/AUnn/<subject>_<task>_AUnn.csv`` (folder also seen
  spelt ``AU-Intensity-Codes3.0``), lines ``frame,code``; codes 0-5, **9 = not coded**. Train on the
  21 FERA2015 training subjects, test on the 20 development subjects (TadasBaltrusaitis/FERA-2015
  ``data extraction/find_BP4D.m``).
"""
import os

import numpy as np

DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
BP4D_AUS = (6, 10, 12, 14, 17)
BP4D_UNLABELLED = 9  # FERA2015 code for "not coded" (extract_BP4D_labels_intensity.m)
MAX_INTENSITY = 5

DISFA_SUBJECTS = tuple(f"SN{i:03d}" for i in (*range(1, 14), 16, 17, 18, 21, *range(23, 33)))


def _sn(*ids):
    return tuple(f"SN{i:03d}" for i in ids)


# (A) the paper's group: per fold train (12) / valid (6) / test (9) subjects (research §3.1).
DISFA_FOLDS_FRL = (
    {"train": _sn(24, 4, 23, 32, 18, 30, 3, 31, 13, 10, 11, 5), "val": _sn(12, 25, 17, 2, 16, 21),
     "test": _sn(1, 7, 6, 29, 26, 28, 9, 8, 27)},
    {"train": _sn(3, 31, 13, 1, 7, 6, 29, 26, 28, 9, 8, 27), "val": _sn(24, 4, 23, 32, 18, 30),
     "test": _sn(10, 11, 5, 12, 25, 17, 2, 16, 21)},
    {"train": _sn(10, 11, 5, 12, 25, 17, 2, 16, 21, 9, 8, 27), "val": _sn(1, 7, 6, 29, 26, 28),
     "test": _sn(24, 4, 23, 32, 18, 30, 3, 31, 13)},
)
# (B) JAA-Net lineage: three parts; fold f tests on one part and trains on the other two.
_JAA_PARTS = (_sn(2, 10, 1, 26, 27, 32, 30, 9, 16), _sn(13, 18, 11, 28, 12, 6, 31, 21, 24),
              _sn(3, 29, 23, 25, 8, 5, 7, 17, 4))
DISFA_FOLDS_JAA = tuple({"train": _JAA_PARTS[a] + _JAA_PARTS[b], "val": (), "test": _JAA_PARTS[t]}
                        for a, b, t in ((0, 1, 2), (0, 2, 1), (1, 2, 0)))
DISFA_FOLDS = {"frl": DISFA_FOLDS_FRL, "jaa": DISFA_FOLDS_JAA}

BP4D_TRAIN = tuple(f"F{i:03d}" for i in range(1, 24, 2)) + tuple(f"M{i:03d}" for i in range(1, 18, 2))
BP4D_DEVEL = tuple(f"F{i:03d}" for i in range(2, 23, 2)) + tuple(f"M{i:03d}" for i in range(2, 19, 2))
BP4D_SPLITS = {"train": BP4D_TRAIN, "devel": BP4D_DEVEL}
BP4D_LABEL_FOLDERS = ("AU Intensity Codes3.0", "AU-Intensity-Codes3.0")


class LabelFormatError(ValueError):
    """A label file that does not follow its dataset's format (names the file and line)."""


def _first_bad_line(lines, allowed):
    """(line number, reason) of the first line that breaks the ``frame,code`` format, or None."""
    for number, line in enumerate(lines, 1):
        parts = line.split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            return number, f"expected 'frame,intensity' with two integers, got {line!r}"
        if len(values) != 2 or any(v != round(v) for v in values):
            return number, f"expected two comma-separated integers, got {line!r}"
        if values[0] < 0 or int(values[1]) not in allowed:
            return number, f"frame {values[0]:.0f} / code {values[1]:.0f}: code not in {sorted(allowed)}"
    return None


def read_intensity_file(path, allowed_codes):
    """(frames, codes) int64 arrays of a ``frame,intensity`` file; trailing blank lines are allowed.

    A line that is not two integers, a negative frame, a code outside ``allowed_codes`` or a
    repeated frame raises LabelFormatError naming the file and the line number.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path}")
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().rstrip("\r\n\t ").splitlines()
    if not lines or not lines[0].strip():
        raise LabelFormatError(f"{path}: empty label file")
    lines = [line.strip() for line in lines]
    try:
        table = np.array([line.split(",") for line in lines], dtype=np.float64)  # N x 2 when well formed
        ok = table.ndim == 2 and table.shape[1] == 2 and np.all(table == np.round(table))
    except ValueError:
        ok = False
    if ok:
        frames, codes = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
        ok = bool((frames >= 0).all() and np.isin(codes, list(allowed_codes)).all())
    if not ok:
        bad = _first_bad_line(lines, set(allowed_codes))
        number, why = bad if bad else (1, "not a two-column integer table")
        raise LabelFormatError(f"{path}:{number}: {why}")
    order = np.argsort(frames, kind="stable")
    repeated = np.flatnonzero(np.diff(frames[order]) == 0)
    if repeated.size:
        raise LabelFormatError(f"{path}:{order[repeated[0] + 1] + 1}: frame {frames[order[repeated[0]]]} "
                               "appears twice")
    return frames, codes


def read_disfa_subject(root, subject, aus=DISFA_AUS):
    """(frames (N,), intensities (N, len(aus)) float32) of one DISFA subject.

    Every AU file must list the same frames (they share the video's frame index); a file that
    disagrees raises, naming it.
    """
    frames0, columns = None, []
    for au in aus:
        path = os.path.join(root, "ActionUnit_Labels", subject, f"{subject}_au{au}.txt")
        frames, codes = read_intensity_file(path, range(MAX_INTENSITY + 1))
        if frames0 is None:
            frames0 = frames
        elif not np.array_equal(frames, frames0):
            raise LabelFormatError(f"{path}: lists {len(frames)} frames that differ from the "
                                   f"{len(frames0)} frames of {subject}_au{aus[0]}.txt")
        columns.append(codes)
    return frames0, np.stack(columns, axis=1).astype(np.float32)


def bp4d_label_folder(root):
    """The folder holding ``AUnn/`` intensity CSVs (either spelling seen in the wild)."""
    for name in BP4D_LABEL_FOLDERS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"{root}: no BP4D intensity folder (expected one of {BP4D_LABEL_FOLDERS})")


def read_bp4d_sequence(label_dir, sequence, aus=BP4D_AUS):
    """(frames (N,), intensities (N, len(aus)) float32, n_dropped) of one ``<subject>_<task>`` sequence.

    Valid-frame rule (FERA2015 ``extract_BP4D_labels_intensity.m``, research §3.2): a frame is kept
    only if **every** AU file lists it **and** its code is 0-5 for every AU; a frame with code 9
    (not coded) for any AU, or missing from any AU file, is dropped as a whole (never set to 0).
    """
    tables = []
    for au in aus:
        path = os.path.join(label_dir, f"AU{au:02d}", f"{sequence}_AU{au:02d}.csv")
        tables.append(read_intensity_file(path, (*range(MAX_INTENSITY + 1), BP4D_UNLABELLED)))
    all_frames = np.unique(np.concatenate([f for f, _ in tables]))
    codes = np.full((len(all_frames), len(aus)), BP4D_UNLABELLED, dtype=np.int64)
    for j, (frames, c) in enumerate(tables):
        codes[np.searchsorted(all_frames, frames), j] = c
    keep = (codes != BP4D_UNLABELLED).all(axis=1)
    return all_frames[keep], codes[keep].astype(np.float32), int((~keep).sum())


def bp4d_sequences(label_dir, subjects, aus=BP4D_AUS):
    """Sorted ``<subject>_<task>`` names of ``subjects`` that have a CSV for the first AU."""
    folder = os.path.join(label_dir, f"AU{aus[0]:02d}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"BP4D label folder not found: {folder}")
    suffix = f"_AU{aus[0]:02d}.csv"
    names = [n[: -len(suffix)] for n in os.listdir(folder) if n.endswith(suffix)]
    wanted = set(subjects)
    return sorted(n for n in names if n.split("_")[0] in wanted)
