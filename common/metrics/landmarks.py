"""Landmark metrics (paper §4.2 Tables 5-6, §4.5 Table 9): per-image NME, AUC / FR, CED, AFLW2000-3D NME.

Protocol facts and their public sources are in shared/research/anchors_landmarks_3d.md (§2, §4.3).
"""
import numpy as np
from scipy.integrate import simpson

from common.landmark_schemes import OUTER_EYE_CORNERS

# Pupil (eye-centre) point groups for the inter-pupil NME, per layout (anchors_landmarks_3d.md §2.1,
# §1.4): 68 pts = centre of the 6 points of each eye (FaRL ibug300w.yaml, STAR norm_type='pupil',
# cofw68-benchmark Main.m); WFLW has explicit pupils 96/97; COFW-29 16/17; AFLW-19 7/10.
PUPIL_GROUPS = {
    68: (tuple(range(36, 42)), tuple(range(42, 48))),
    98: ((96,), (97,)),
    29: ((16,), (17,)),
    19: ((7,), (10,)),
}
NORMS = ("interocular", "interpupil", "box_diag", "box_size")


def _box_wh(gt, box):
    """Width and height (N,) of the given (N, 4) x1, y1, x2, y2 boxes, else of the GT landmarks' box."""
    if box is None:
        wh = gt.max(axis=1) - gt.min(axis=1)                      # (N, 2)
        return wh[:, 0], wh[:, 1]
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (gt.shape[0], 4):
        raise ValueError(f"box must have shape ({gt.shape[0]}, 4) as x1, y1, x2, y2; got {box.shape}")
    return box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]


def normaliser(gt, norm, box=None):
    """Per-image normalising distance (N,) for NME, computed from the ground truth.

    norm: "interocular" (outer eye corners, common.landmark_schemes.OUTER_EYE_CORNERS: 300W 36/45,
    WFLW 60/72); "interpupil" (PUPIL_GROUPS); "box_diag" = sqrt(w^2 + h^2); "box_size" = sqrt(w*h).
    The box is the tight box of the GT landmarks unless ``box`` (N, 4) x1, y1, x2, y2 is given:
    AFLW-19 NME_diag / NME_box in FaRL use the AFLWinfo ``bbox`` (scorer.py NormalizeByBoxDiag /
    NormalizeByBox), whereas the FAN line (SHR-FAN, same group as the paper) appears to use the GT
    landmark box, and COFW-68 "box" and AFLW2000-3D use the GT landmark box (anchors_landmarks_3d.md
    §2.1). Pass the AFLWinfo box explicitly to get FaRL's numbers.
    """
    gt = np.asarray(gt, dtype=np.float64)
    n_points = gt.shape[1]
    if norm in ("interocular", "interpupil"):
        if box is not None:
            raise ValueError(f"box= only applies to box_diag / box_size, not to norm={norm!r}")
        table = ({k: ((a,), (b,)) for k, (a, b) in OUTER_EYE_CORNERS.items()}
                 if norm == "interocular" else PUPIL_GROUPS)
        if n_points not in table:
            raise ValueError(f"norm={norm!r} is defined for {sorted(table)} landmarks, not {n_points}")
        left, right = table[n_points]
        eye_l = gt[:, list(left)].mean(axis=1)
        eye_r = gt[:, list(right)].mean(axis=1)
        return np.linalg.norm(eye_l - eye_r, axis=-1)
    if norm == "box_diag":
        w, h = _box_wh(gt, box)
        return np.sqrt(w * w + h * h)
    if norm == "box_size":
        w, h = _box_wh(gt, box)
        return np.sqrt(w * h)
    raise ValueError(f"unknown NME normaliser {norm!r}; expected an (N,) array or one of {NORMS}")


def nme(pred, gt, norm, *, mask=None, box=None):
    """Per-image NME (N,): mean over points of ||pred - gt||_2, divided by the image's normaliser.

    pred, gt: (N, P, 2). norm: (N,) array of normalisers or a name accepted by ``normaliser``.
    mask: optional (N, P) visibility (True = count the point). The standard protocols (HRNet, FaRL,
    the COFW-68 benchmark's main number) average over *all* points, occluded ones included; SBR/SAN
    average over visible points only (anchors_landmarks_3d.md §2.1 notes). Pass a mask only to get
    the latter. Multiply the mean by 100 to report it in %.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (N, P, 2); got {pred.shape} and {gt.shape}")
    if isinstance(norm, str):
        d = normaliser(gt, norm, box)
    else:
        if box is not None:
            raise ValueError("box= is only used with a named box normaliser")
        d = np.asarray(norm, dtype=np.float64)
        if d.shape != (gt.shape[0],):
            raise ValueError(f"norm array must have shape ({gt.shape[0]},); got {d.shape}")
    bad = np.flatnonzero(~(d > 0))
    if bad.size:
        raise ValueError(f"non-positive or NaN NME normaliser for samples {bad[:10].tolist()}")
    err = np.linalg.norm(pred - gt, axis=-1)                     # (N, P)
    if mask is None:
        return err.mean(axis=1) / d
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != err.shape:
        raise ValueError(f"mask must have shape {err.shape}; got {mask.shape}")
    count = mask.sum(axis=1)
    empty = np.flatnonzero(count == 0)
    if empty.size:
        raise ValueError(f"no visible landmark in samples {empty[:10].tolist()}")
    return (err * mask).sum(axis=1) / count / d


def ced(nmes, thresholds):
    """Cumulative error distribution: fraction of images with NME <= t, for each t in thresholds."""
    nmes = np.sort(np.asarray(nmes, dtype=np.float64).ravel())
    if nmes.size == 0:
        raise ValueError("ced needs at least one NME value")
    return np.searchsorted(nmes, np.asarray(thresholds, dtype=np.float64), side="right") / nmes.size


def auc_fr(nmes, threshold=0.1, step=1e-4):
    """(AUC, FR) at ``threshold``, FaRL's recipe (scorer.py AUC_FR, from HRNet issue #6).

    xs = arange(0, threshold + step, step); ced = fraction of NME <= x; AUC = Simpson(ced, xs) /
    threshold; FR = 1 - ced[-1] (anchors_landmarks_3d.md §2.2, recommended variant; STAR is the same).
    Kept exactly, quirks included: arange may end one step past the threshold (0.07 -> last x 0.0701,
    702 points), so FR then counts NME <= 0.0701 as a success. scipy's ``simpson`` replaces the
    removed ``simps``; with an even number of points (0.07) its last-interval rule differs from old
    ``simps(even='avg')`` at the 1e-5 level; with 0.1 / 1e-4 (1001 points) both are identical.
    """
    xs = np.arange(0.0, threshold + step, step)
    curve = ced(nmes, xs)
    return float(simpson(curve, x=xs) / threshold), float(1.0 - curve[-1])


def aflw2000_yaw_bins(yaw):
    """{bin name: mask} of the AFLW2000-3D |yaw| bins (degrees) as cleardusk/3DDFA benchmark_aflw2000.py ``ana``
    forms them: |yaw| <= 30, 30 < |yaw| <= 60, |yaw| > 60 (anchors_landmarks_3d.md §4.3)."""
    yaw = np.abs(np.asarray(yaw, dtype=np.float64))
    return {"yaw_0_30": yaw <= 30, "yaw_30_60": (yaw > 30) & (yaw <= 60), "yaw_60_90": yaw > 60}


def nme_aflw2000(pred, gt, yaw):
    """AFLW2000-3D "NME (68 points)" by |yaw| bin, as 3DDFA benchmark_aflw2000.py computes it.

    pred, gt: (N, 68, 2+) image coordinates; only x, y are used (the benchmark ignores z).
    yaw: (N,) in degrees. Per image: mean 2-D point error / sqrt(w*h) of the GT 68 points' box.
    Bins as in the reference code: |yaw| <= 30, 30 < |yaw| <= 60, |yaw| > 60 (so 30 falls in the
    first bin and 60 in the second). "mean" is the mean of the three bin means (the reported number),
    "pooled" the mean over all images (anchors_landmarks_3d.md §4.3). An empty bin gives NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    yaw = np.abs(np.asarray(yaw, dtype=np.float64))
    if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[2] < 2:
        raise ValueError(f"pred and gt must both be (N, 68, 2 or 3); got {pred.shape} and {gt.shape}")
    if yaw.shape != (gt.shape[0],):
        raise ValueError(f"yaw must have shape ({gt.shape[0]},); got {yaw.shape}")
    if not np.isfinite(yaw).all():
        raise ValueError(f"non-finite yaw for samples {np.flatnonzero(~np.isfinite(yaw))[:10].tolist()}")
    per_image = nme(pred[..., :2], gt[..., :2], "box_size")
    bins = aflw2000_yaw_bins(yaw)
    out = {k: float(per_image[m].mean()) if m.any() else float("nan") for k, m in bins.items()}
    out["mean"] = float(np.mean([out[k] for k in bins]))
    out["pooled"] = float(per_image.mean())
    return out
