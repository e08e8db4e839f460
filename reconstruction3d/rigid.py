"""Rigid / similarity alignment of a predicted mesh to a ground-truth scan (paper App. D.2, Fig. 6).

The Florence protocol is [unverified] (shared/research/anchors_landmarks_3d.md §4.5: no public
evaluation code from PRNet, 3DDFA_V2 or the FRL authors). The usual statement: align the predicted
mesh to the scan rigidly (ICP), then report a cumulative error curve of the mean point distance
normalised by the 3-D outer inter-ocular distance. We implement:

- ``procrustes``: least-squares similarity (Umeyama 1991) with known correspondence, used when
  the scan shares the predicted mesh's topology (the synthetic Florence-like set);
- ``icp``: iterative closest points with a similarity update (nearest scan point per predicted
  vertex, scipy cKDTree), started from the prediction brought to the frontal model frame by
  its Procrustes fit to the template and matched in centroid and RMS size; it stops when the
  mean distance changes by less than ``tol`` (relative), as 2DASL's ``icp_process_xgtu.m`` does;
- ``florence_error``: mean distance (prediction -> scan, after alignment) divided by the
  normaliser: ``interocular`` = 3-D distance of the outer eye corners (landmarks 36, 45) of the
  scan when it shares the topology, else of the aligned prediction (a proxy: raw scans carry no
  landmarks), or ``bbox_diag`` = the diagonal of the scan's 3-D bounding box.
"""
import numpy as np
from scipy.spatial import cKDTree

NORMALISERS = ("interocular", "bbox_diag")


def procrustes(src, dst, scale=True):
    """(s, R, t) minimising sum |s R src_i + t - dst_i|^2, det R = +1; src, dst (N, 3)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
    rot = u @ np.diag(d) @ vt
    s = float((sig * d).sum() / a.var(0).sum()) if scale else 1.0
    return s, rot, mu_d - s * rot @ mu_s


def apply(transform, points):
    s, rot, t = transform
    return s * np.asarray(points, dtype=np.float64) @ rot.T + t


def icp(src, dst, init=None, iterations=50, tol=1e-4):
    """Similarity ICP of ``src`` onto the point cloud ``dst``; returns (transform, aligned src)."""
    tree = cKDTree(np.asarray(dst, dtype=np.float64))
    moved = apply(init, src) if init is not None else np.asarray(src, dtype=np.float64)
    total = init or (1.0, np.eye(3), np.zeros(3))
    previous = np.inf
    for _ in range(iterations):
        dist, nearest = tree.query(moved)
        step = procrustes(moved, tree.data[nearest])
        moved = apply(step, moved)
        s0, r0, t0 = total
        total = (step[0] * s0, step[1] @ r0, step[0] * step[1] @ t0 + step[2])
        error = float(dist.mean())
        if abs(previous - error) <= tol * max(error, 1e-12):
            break
        previous = error
    return total, moved


def frontal_start(pred, template, scan):
    """Similarity taking ``pred`` to the frontal model frame of ``template`` and then onto the
    scan's centroid and RMS size: the starting point of ``icp``."""
    s, rot, t = procrustes(pred, template)                   # pred -> template frame (pose removed)
    frontal = apply((s, rot, t), pred)
    scan = np.asarray(scan, dtype=np.float64)
    k = np.sqrt(((scan - scan.mean(0)) ** 2).sum(1).mean() / ((frontal - frontal.mean(0)) ** 2).sum(1).mean())
    shift = scan.mean(0) - k * frontal.mean(0)
    return k * s, rot, k * t + shift


def florence_error(pred, scan, *, landmark_ids, template, alignment="auto", norm="interocular"):
    """Normalised mean distance of one prediction (V, 3) to its scan (M, 3); both right-handed.

    alignment: "procrustes" (needs M == V), "icp", or "auto" (procrustes when M == V).
    """
    if norm not in NORMALISERS:
        raise ValueError(f"unknown Florence normaliser {norm!r}; expected one of {NORMALISERS}")
    pred, scan = np.asarray(pred, dtype=np.float64), np.asarray(scan, dtype=np.float64)
    same = len(scan) == len(pred)
    if alignment == "auto":
        alignment = "procrustes" if same else "icp"
    if alignment == "procrustes":
        if not same:
            raise ValueError(f"procrustes alignment needs the scan in the mesh topology "
                             f"({len(pred)} vertices); the scan has {len(scan)}")
        aligned = apply(procrustes(pred, scan), pred)
        dist = np.linalg.norm(aligned - scan, axis=1)
    elif alignment == "icp":
        _, aligned = icp(pred, scan, init=frontal_start(pred, template, scan))
        dist = cKDTree(scan).query(aligned)[0]
    else:
        raise ValueError(f"unknown alignment {alignment!r}; expected auto, procrustes or icp")
    if norm == "interocular":
        eyes = (scan if same else aligned)[np.asarray(landmark_ids)[[36, 45]]]
        d = float(np.linalg.norm(eyes[0] - eyes[1]))
    else:
        d = float(np.linalg.norm(np.ptp(scan, axis=0)))
    if not d > 0:
        raise ValueError("Florence normaliser is zero")
    return float(dist.mean() / d)
