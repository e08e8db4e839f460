"""Face-verification metrics (paper §4.1 Table 4): ROC and TAR@FAR on IJB-B / IJB-C 1:1 pair scores.

Reproduces scikit-learn ``roc_curve`` (default ``drop_intermediate=True``) and the insightface
read-off (``ijb_11.py`` / ``eval_ijbc.py``), per shared/research/anchors_recog_au_emotion.md §1.5.
Vectorised: one sort of the scores, run-length counts, cumulative sums (15.7M IJB-C pairs in ~1 s).
"""
import warnings

import numpy as np

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _scores_labels(scores, labels):
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError(f"scores and labels must be non-empty and of equal length; got "
                         f"{scores.shape} and {labels.shape}")
    if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
        raise ValueError("scores must be finite numbers")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be boolean or 0/1 (1 = genuine pair); found values "
                             f"{np.unique(labels)[:5].tolist()}")
        labels = labels == 1
    return scores, labels


def roc(scores, labels):
    """(fpr, tpr, thresholds) exactly as ``sklearn.metrics.roc_curve(labels, scores)`` returns them.

    Thresholds are the distinct scores in decreasing order; at each, tps/fps count the positives /
    negatives with score >= threshold. Points collinear with their neighbours are dropped (a point
    is kept where the second difference of fps or of tps is non-zero, plus both ends), then (0, 0)
    is prepended with threshold +inf. Without negatives (positives) fpr (tpr) is NaN with a warning.
    """
    scores, labels = _scores_labels(scores, labels)
    # One plain sort (no argsort: ties need no order), then per distinct score the number of
    # pairs and of genuine pairs; cumulative sums from the top give tps/fps at each threshold.
    ascending = np.sort(scores)
    starts = np.flatnonzero(np.concatenate([[True], ascending[1:] != ascending[:-1]]))
    distinct = ascending[starts]
    counts = np.diff(np.append(starts, scores.size))
    genuine = np.bincount(np.searchsorted(distinct, scores[labels]), minlength=distinct.size)
    thresholds = distinct[::-1]                                  # decreasing score
    tps = np.cumsum(genuine[::-1], dtype=np.float64)
    fps = np.cumsum(counts[::-1], dtype=np.float64) - tps
    if fps.size > 2:
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.concatenate([[0.0], fps])
    tps = np.concatenate([[0.0], tps])
    thresholds = np.concatenate([[np.inf], thresholds.astype(np.float64)])
    if fps[-1] <= 0:
        warnings.warn("roc: no negative pairs, FPR is undefined", RuntimeWarning, stacklevel=2)
        fpr = np.full(fps.shape, np.nan)
    else:
        fpr = fps / fps[-1]
    if tps[-1] <= 0:
        warnings.warn("roc: no positive pairs, TPR is undefined", RuntimeWarning, stacklevel=2)
        tpr = np.full(tps.shape, np.nan)
    else:
        tpr = tps / tps[-1]
    return fpr, tpr, thresholds


def tar_at_far(scores, labels, fars=IJB_FARS):
    """{far: TAR} read off the ROC as insightface's IJB evaluation does.

    For each target x: reverse the ROC arrays, take the first index of the minimum of |fpr - x|
    (the nearest ROC vertex; its FPR may lie above x) and report its TPR. The reversal makes ties
    go to the vertex with the larger TPR: among vertices sharing one FPR the highest, and when two
    FPRs are equally near, the larger one (anchors_recog_au_emotion.md §1.5). TAR is a fraction;
    insightface prints '%.2f' % (100 * TAR).
    """
    fpr, tpr, _ = roc(scores, labels)
    fpr, tpr = fpr[::-1], tpr[::-1]
    return {far: float(tpr[np.argmin(np.abs(fpr - far))]) for far in fars}   # 5 targets, not a loop over scores
