"""Evaluation metrics of the five downstream tasks (paper §4): landmarks, AU / emotion regression, verification."""
from common.metrics.landmarks import PUPIL_GROUPS, auc_fr, ced, nme, nme_aflw2000, normaliser
from common.metrics.regression import accuracy, ccc, icc31, icc31_matrix, mae, pcc, rmse, sagr
from common.metrics.verification import IJB_FARS, roc, tar_at_far

__all__ = [
    "PUPIL_GROUPS", "auc_fr", "ced", "nme", "nme_aflw2000", "normaliser",
    "accuracy", "ccc", "icc31", "icc31_matrix", "mae", "pcc", "rmse", "sagr",
    "IJB_FARS", "roc", "tar_at_far",
]
