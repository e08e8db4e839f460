"""Tests for common.metrics: hand-computed values, Shrout-Fleiss ICC, scikit-learn ROC equality."""
import time
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from common.metrics import (accuracy, auc_fr, ccc, ced, icc31, icc31_matrix, mae, nme, nme_aflw2000,
                            pcc, rmse, roc, sagr, tar_at_far)


# ----------------------------------------------------------------------------- landmarks
def _face68():
    """One 68-point GT face with hand-placed points.

    Box: p0 = (0, 0), p16 = (20, 10), all others inside -> w = 20, h = 10.
    Outer eye corners p36 = (2, 5), p45 = (12, 5) -> inter-ocular 10.
    Right eye 36..41: (2 + 5 * 3.2) / 6 = 3 ; left eye 42..47: (3 * 11 + 12 + 2 * 10.5) / 6 = 11
    -> inter-pupil 8.
    """
    gt = np.zeros((68, 2))
    gt[16] = (20, 10)
    gt[36:42] = (3.2, 5)
    gt[36] = (2, 5)
    gt[42:45] = (11, 5)
    gt[45] = (12, 5)
    gt[46:48] = (10.5, 5)
    # error 5 on point 10 (3-4-5 triangle) and 1.8 on point 20: mean error 6.8 / 68 = 0.1
    pred = gt.copy()
    pred[10] += (3, 4)
    pred[20] += (0, 1.8)
    return pred, gt


def test_nme_68_named_normalisers():
    pred, gt = _face68()
    pred, gt = pred[None], gt[None]
    assert nme(pred, gt, "interocular")[0] == pytest.approx(0.01)                 # 0.1 / 10
    assert nme(pred, gt, "interpupil")[0] == pytest.approx(0.0125)                # 0.1 / 8
    assert nme(pred, gt, "box_diag")[0] == pytest.approx(0.004472135955)          # 0.1 / sqrt(20^2 + 10^2)
    assert nme(pred, gt, "box_size")[0] == pytest.approx(0.007071067812)          # 0.1 / sqrt(20 * 10)


def test_nme_batch_array_norm_box_and_mask():
    pred, gt = _face68()
    pred2, gt2 = np.stack([pred, 2 * gt]), np.stack([gt, 2 * gt])               # sample 0 error, sample 1 exact
    # sample 0: 0.1 / 10 ; the pred/gt swap does not change the error
    np.testing.assert_allclose(nme(pred2, gt2, np.array([10.0, 3.0])), [0.01, 0.0])
    # given boxes x1, y1, x2, y2: 30 x 40 -> diag 50, size sqrt(1200) = 34.64101615
    box = np.array([[0, 0, 30, 40], [5, 5, 35, 45]])
    np.testing.assert_allclose(nme(pred2, gt2, "box_diag", box=box), [0.002, 0.0])          # 0.1 / 50
    np.testing.assert_allclose(nme(pred2, gt2, "box_size", box=box), [0.002886751346, 0.0])  # 0.1 / 34.641
    # point 10 invisible: mean over 67 visible points = 1.8 / 67 = 0.026865671642, / 10
    mask = np.ones((2, 68), bool)
    mask[:, 10] = False
    np.testing.assert_allclose(nme(pred2, gt2, "interocular", mask=mask), [0.0026865671642, 0.0])


def test_nme_98_points():
    gt = np.zeros((1, 98, 2))
    gt[0, 60], gt[0, 72] = (10, 20), (16, 28)        # 6-8-10 triangle: inter-ocular 10
    gt[0, 96], gt[0, 97] = (12, 22), (15, 26)        # 3-4-5 triangle: inter-pupil 5
    pred = gt.copy()
    pred[0, 0] += (0, 9.8)                           # mean error 9.8 / 98 = 0.1
    assert nme(pred, gt, "interocular")[0] == pytest.approx(0.01)
    assert nme(pred, gt, "interpupil")[0] == pytest.approx(0.02)


def test_nme_bad_input():
    pred, gt = _face68()
    with pytest.raises(ValueError, match="unknown NME normaliser"):
        nme(pred[None], gt[None], "eyes")
    with pytest.raises(ValueError, match="defined for"):
        nme(np.zeros((1, 5, 2)), np.ones((1, 5, 2)), "interocular")
    with pytest.raises(ValueError, match="non-positive"):
        nme(pred[None], np.zeros((1, 68, 2)), "box_size")                       # zero-size box
    with pytest.raises(ValueError, match="box="):
        nme(pred[None], gt[None], "interocular", box=np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        nme(pred[None], gt[None, :60], "interocular")


def test_ced_and_auc_fr_hand_computed():
    nmes = np.array([0.5, 0.02005, 0.2, 0.05005])
    np.testing.assert_allclose(ced(nmes, [0.0, 0.02005, 0.05, 0.1, 0.5]), [0.0, 0.25, 0.25, 0.5, 1.0])
    # xs = i * 1e-4, i = 0..1000; ced = 0 (i <= 200), 0.25 (201..500), 0.5 (501..1000).
    # Simpson weights h/3 * (1, 4, 2, ..., 4, 1): sum over 201..500 = 150 * 4 + 150 * 2 = 900,
    # over 501..1000 = 250 * 4 + 249 * 2 + 1 = 1499 -> (1e-4 / 3) * (0.25 * 900 + 0.5 * 1499) / 0.1
    # = (1e-4 / 3) * 974.5 / 0.1 = 0.32483333...; FR = 1 - ced[-1] = 0.5
    auc, fr = auc_fr(nmes, threshold=0.1)
    assert auc == pytest.approx(0.3248333333333, rel=1e-10)
    assert fr == 0.5
    assert auc_fr(np.zeros(3)) == pytest.approx((1.0, 0.0))


def test_auc_fr_keeps_farl_grid_quirk_at_007():
    # arange(0, 0.07 + 1e-4, 1e-4) ends at 0.0701, so FaRL counts an NME of 0.07005 as a success
    assert auc_fr([0.07005], threshold=0.07)[1] == 0.0
    assert auc_fr([0.07015], threshold=0.07)[1] == 1.0


def _aflw2000_case():
    """7 faces, GT box 10 x 10 (p0 = (0, 0), p1 = (10, 10)), pred = GT shifted by d in x -> NME d / 10."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 10, (7, 68, 3))
    gt[:, 0, :2], gt[:, 1, :2] = 0, 10
    d = np.array([1, 2, 3, 4, 5, 6, 2.9])
    pred = gt.copy()
    pred[:, :, 0] += d[:, None]
    pred[:, :, 2] += 100.0                                  # z is ignored by the benchmark
    yaw = np.array([-30, 30.5, 60, -60.5, 90, 10, 0])
    return pred, gt, yaw


def test_nme_aflw2000_yaw_bins_and_means():
    pred, gt, yaw = _aflw2000_case()
    out = nme_aflw2000(pred, gt, yaw)
    # |yaw| <= 30: faces -30, 10, 0 -> (0.1 + 0.6 + 0.29) / 3 = 0.33 (30 is in the FIRST bin)
    # 30 < |yaw| <= 60: 30.5, 60 -> (0.2 + 0.3) / 2 = 0.25 (60 is in the SECOND bin)
    # |yaw| > 60: -60.5, 90 -> (0.4 + 0.5) / 2 = 0.45 (90 is in the THIRD bin)
    assert out["yaw_0_30"] == pytest.approx(0.33)
    assert out["yaw_30_60"] == pytest.approx(0.25)
    assert out["yaw_60_90"] == pytest.approx(0.45)
    assert out["mean"] == pytest.approx(1.03 / 3)           # mean of the bin means 0.343333
    assert out["pooled"] == pytest.approx(2.39 / 7)         # (0.1 + ... + 0.6 + 0.29) / 7 = 0.341429


def test_nme_aflw2000_empty_bin_is_nan():
    pred, gt, yaw = _aflw2000_case()
    out = nme_aflw2000(pred[:3], gt[:3], np.array([0.0, 5.0, 45.0]))
    assert np.isnan(out["yaw_60_90"]) and np.isnan(out["mean"])
    assert out["pooled"] == pytest.approx(0.2)              # (0.1 + 0.2 + 0.3) / 3


# ----------------------------------------------------------------------------- regression
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
                          [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc31_shrout_fleiss_table():
    # BMS = 11.2417, EMS = 1.0194: (BMS - EMS) / (BMS + 3 EMS) = 10.2222 / 14.3 = 0.714841
    icc = icc31_matrix(SHROUT_FLEISS)
    assert round(icc, 3) == 0.715
    assert icc == pytest.approx(0.7148407148, rel=1e-9)


def test_icc31_two_raters_hand_computed():
    # rows (1,1) (2,3) (3,2): row means 1, 2.5, 2.5; column means 2, 2; grand 2.
    # BMS = 2 * (1 + 0.25 + 0.25) / 2 = 1.5; residuals 0, 0, -.5, .5, .5, -.5 -> EMS = 1 / 2 = 0.5
    # ICC = (1.5 - 0.5) / (1.5 + 0.5) = 0.5
    assert icc31([1, 3, 2], [1, 2, 3]) == pytest.approx(0.5)
    # consistency: a constant offset does not lower ICC(3,1); columns are independent
    np.testing.assert_allclose(icc31(np.array([[2, 1], [3, 3], [4, 2]]), np.array([[1, 1], [2, 2], [3, 3]])),
                               [1.0, 0.5])


def test_regression_metrics_hand_computed():
    pred, gt = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])
    assert mae(pred, gt) == pytest.approx(1 / 3)                     # (0 + 0 + 1) / 3
    assert rmse(pred, gt) == pytest.approx(0.5773502692)             # sqrt(1 / 3)
    # var_p = 2/3, var_g = 14/9, cov = (4/3 + 0 + 5/3) / 3 = 1
    assert pcc(pred, gt) == pytest.approx(0.9819805061)              # 1 / sqrt(2/3 * 14/9) = sqrt(27/28)
    assert pcc(pred, gt) == pytest.approx(np.corrcoef(gt, pred)[0, 1])
    assert ccc(pred, gt) == pytest.approx(18 / 21)                   # 2 / (6/9 + 14/9 + (2 - 7/3)^2)
    assert ccc(gt, gt) == pytest.approx(1.0)
    # signs pred (+, -, 0, +) vs gt (+, +, 0, 0): agree at 0 and 2 -> 0.5 (sign(0) = 0, EmoNet)
    assert sagr([0.5, -0.2, 0.0, 0.3], [0.1, 0.4, 0.0, -0.0]) == 0.5
    assert accuracy([0, 1, 2, 2], [0, 2, 2, 1]) == 0.5
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 0, 0]) == pytest.approx(2 / 3)


def test_regression_metrics_per_column():
    rng = np.random.default_rng(1)
    pred, gt = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    for fn in (mae, rmse, pcc, ccc, sagr, icc31):
        cols = fn(pred, gt)
        assert cols.shape == (3,)
        np.testing.assert_allclose(cols, [fn(pred[:, j], gt[:, j]) for j in range(3)])
    with pytest.raises(ValueError, match="same shape"):
        mae(pred, gt[:10])


# ----------------------------------------------------------------------------- verification
HAND_SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
HAND_LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0])


def test_roc_hand_computed():
    # distinct thresholds 0.9 .8 .7 .6 .5 .4 .3: tps 1 2 3 3 3 4 4, fps 0 1 1 2 3 3 4;
    # 0.6 (fps 2, tps 3) lies on the segment (1, 3)-(3, 3) and is dropped; then (0, 0) / inf prepended
    fpr, tpr, thr = roc(HAND_SCORES, HAND_LABELS)
    np.testing.assert_array_equal(fpr, [0, 0, 0.25, 0.25, 0.75, 0.75, 1])
    np.testing.assert_array_equal(tpr, [0, 0.25, 0.5, 0.75, 0.75, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.4, 0.3])


def test_tar_at_far_nearest_vertex_rule():
    fars = (0.0, 0.1, 0.2, 0.5, 0.9)
    out = tar_at_far(HAND_SCORES, HAND_LABELS, fars=fars)
    # 0.0 -> FPR 0 vertices have TPR 0, .25: largest 0.25; 0.1 -> FPR 0 nearer (0.1 < 0.15): 0.25;
    # 0.2 -> FPR .25 nearest (above the target!): max TPR 0.75, where "TPR at FPR <= 0.2" would be 0.25;
    # 0.5 -> FPR .25 and .75 equally near: the larger FPR wins: TPR 1.0; 0.9 -> FPR 1: TPR 1
    assert out == {0.0: 0.25, 0.1: 0.25, 0.2: 0.75, 0.5: 1.0, 0.9: 1.0}


@pytest.mark.parametrize("kind", ["ties", "float32", "all_equal", "two_values"])
def test_roc_equals_sklearn(kind):
    rng = np.random.default_rng(2)
    n = 200_000 if kind == "ties" else 5_000
    labels = rng.random(n) < 0.1
    scores = {"ties": np.round(rng.normal(size=n) + labels, 2),
              "float32": (rng.normal(size=n) + 2 * labels).astype(np.float32),
              "all_equal": np.full(n, 0.3),
              "two_values": rng.integers(0, 2, n).astype(float)}[kind]
    for got, want in zip(roc(scores, labels.astype(int)), roc_curve(labels.astype(int), scores)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_tar_at_far_matches_insightface_readoff_on_sklearn_roc():
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(500, bool), np.zeros(100_000, bool)]
    scores = np.round(np.r_[rng.normal(2.0, 1.0, 500), rng.normal(0.0, 1.0, 100_000)], 3)
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    want = {x: tpr[np.argmin(np.abs(fpr - x))] for x in (1e-5, 1e-4, 1e-3, 1e-2)}
    assert tar_at_far(scores, labels, fars=tuple(want)) == want


def test_roc_bad_input_and_one_class():
    with pytest.raises(ValueError, match="0/1"):
        roc([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        roc([0.1, np.nan], [1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(roc([0.1, 0.2], [1, 1])[0]).all()


def test_roc_is_fast_on_2m_scores():
    rng = np.random.default_rng(4)
    labels = rng.random(2_000_000) < 0.01
    scores = rng.normal(size=2_000_000).astype(np.float32) + labels
    start = time.perf_counter()
    tar_at_far(scores, labels)
    assert time.perf_counter() - start < 5.0      # a few tenths of a second when the CPU is free
