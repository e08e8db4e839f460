"""Evaluation metrics of the five downstream tasks (paper §4): landmarks, AU / emotion regression, verification."""
from common.metrics.landmarks import PUPIL_GROUPS, auc_fr, ced, nme, nme_aflw2000, normaliser
from common.metrics.regression import accuracy, ccc, icc31, icc31_matrix, mae, pcc, rmse, sagr
from common.metrics.verification import IJB_FARS, roc, tar_at_far

__all__ = [
    "PUPIL_GROUPS", "auc_fr", "ced", "nme", "nme_aflw2000", "normaliser",
    "accuracy", "ccc", "icc31", "icc31_matrix", "mae", "pcc", "rmse", "sagr",
    "IJB_FARS", "roc", "tar_at_far", "LOWER_IS_BETTER", "lower_is_better",
]

# The direction of every metric that can select a checkpoint (common.engine.Best) or a sweep's setting.
LOWER_IS_BETTER = {
    "nme_io": True, "nme_ip": True, "nme_box": True, "nme_diag": True, "nme": True, "nme68": True, "fr": True,
    "auc": False,
    "icc_mean": False, "mae_mean": True, "rmse": True, "ccc": False, "pcc": False, "sagr": False, "accuracy": False,
}


def lower_is_better(metric):
    """True when a smaller ``metric`` is better (``LOWER_IS_BETTER``); an undeclared name raises."""
    if metric not in LOWER_IS_BETTER:
        raise KeyError(f"metric {metric!r} declares no direction; add it to common.metrics.LOWER_IS_BETTER")
    return LOWER_IS_BETTER[metric]
