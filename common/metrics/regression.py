"""AU-intensity and emotion metrics (paper §4.3 Table 7, App. AffectNet): ICC(3,1), MAE, RMSE, PCC, CCC, SAGR, ACC.

Definitions follow EmoNet ``emonet/metrics.py`` (same group as the paper) and Shrout & Fleiss (1979),
as recorded in shared/research/anchors_recog_au_emotion.md §4 and §5.2.
Shape rule: ``pred`` and ``gt`` of shape (N,) give a float; (N, K) give a (K,) array, one per column.
"""
import numpy as np


def _pair(pred, gt, name):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim not in (1, 2) or gt.shape[0] == 0:
        raise ValueError(f"{name}: pred and gt must have the same shape (N,) or (N, K), N >= 1; "
                         f"got {pred.shape} and {gt.shape}")
    return pred, gt


def _out(x):
    return float(x) if np.ndim(x) == 0 else np.asarray(x, dtype=np.float64)


def mae(pred, gt):
    """Mean absolute error, per column."""
    pred, gt = _pair(pred, gt, "mae")
    return _out(np.abs(pred - gt).mean(axis=0))


def rmse(pred, gt):
    """Root mean squared error sqrt(mean((gt - pred)^2)), per column (EmoNet RMSE)."""
    pred, gt = _pair(pred, gt, "rmse")
    return _out(np.sqrt(((pred - gt) ** 2).mean(axis=0)))


def _moments(pred, gt):
    """Population (1/N) means, variances and covariance, per column."""
    mp, mg = pred.mean(axis=0), gt.mean(axis=0)
    dp, dg = pred - mp, gt - mg
    return mp, mg, (dp * dp).mean(axis=0), (dg * dg).mean(axis=0), (dp * dg).mean(axis=0)


def pcc(pred, gt):
    """Pearson correlation (= np.corrcoef(gt, pred)[0, 1], EmoNet PCC), per column; NaN for a constant input."""
    pred, gt = _pair(pred, gt, "pcc")
    _, _, vp, vg, cov = _moments(pred, gt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(cov / np.sqrt(vp * vg))


def ccc(pred, gt):
    """Lin's concordance 2 cov / (var_p + var_g + (mu_p - mu_g)^2), population moments (EmoNet, np.std ddof=0)."""
    pred, gt = _pair(pred, gt, "ccc")
    mp, mg, vp, vg, cov = _moments(pred, gt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(2.0 * cov / (vp + vg + (mp - mg) ** 2))


def sagr(pred, gt):
    """Sign agreement mean(sign(pred) == sign(gt)), per column (EmoNet SAGR).

    np.sign(0) = 0, so a zero label only agrees with an exactly-zero prediction, as in EmoNet.
    """
    pred, gt = _pair(pred, gt, "sagr")
    return _out((np.sign(pred) == np.sign(gt)).mean(axis=0))


def accuracy(pred, gt):
    """Classification accuracy mean(pred == gt). ``pred``: (N,) labels, or (N, C) scores (argmax is taken)."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.shape != gt.shape or gt.ndim != 1 or gt.size == 0:
        raise ValueError(f"accuracy: need (N,) labels or (N, C) scores and (N,) labels, N >= 1; "
                         f"got {pred.shape} and {gt.shape}")
    return float((pred == gt).mean())


def icc31_matrix(ratings):
    """ICC(3,1) (two-way mixed, consistency, single rater; Shrout & Fleiss 1979) of an (n, k) table.

    n targets (rows) rated by k judges (columns); an (n, k, K) array gives K values at once.
    With row means r_i, column means c_j and grand mean g:
      BMS = k * sum_i (r_i - g)^2 / (n - 1)
      EMS = sum_ij (y_ij - r_i - c_j + g)^2 / ((n - 1)(k - 1))
      ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS)
    (anchors_recog_au_emotion.md §4.2; identical to EmoNet's ICC for k = 2 and pingouin's ICC3).
    """
    y = np.asarray(ratings, dtype=np.float64)
    if y.ndim not in (2, 3) or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"icc31_matrix: ratings must be (n, k) or (n, k, K) with n, k >= 2; got {y.shape}")
    n, k = y.shape[:2]
    rows = y.mean(axis=1, keepdims=True)                         # (n, 1, ...)
    cols = y.mean(axis=0, keepdims=True)                         # (1, k, ...)
    grand = y.mean(axis=(0, 1), keepdims=True)                   # (1, 1, ...)
    bms = k * ((rows - grand) ** 2).sum(axis=(0, 1)) / (n - 1)
    ems = ((y - rows - cols + grand) ** 2).sum(axis=(0, 1)) / ((n - 1) * (k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out((bms - ems) / (bms + (k - 1) * ems))


def icc31(pred, gt):
    """ICC(3,1) between prediction and ground truth (the two "judges"), per column (per AU).

    This is the AU-intensity ICC of the paper's Table 7: computed per AU over all test frames, then
    averaged over AUs by the caller (anchors_recog_au_emotion.md §4.1, §4.3).
    """
    pred, gt = _pair(pred, gt, "icc31")
    return icc31_matrix(np.stack([gt, pred], axis=1))
