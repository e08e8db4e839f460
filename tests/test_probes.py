"""Representation probes (pretrain/probes.py) and the synthetic probe set (common/synthetic 'probe')."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common.backbone import build_backbone
from pretrain.probes import DualRidge, ProbeSet, Probes, identity_splits, plot_probes, ridge_probe


def test_dual_ridge_equals_the_primal_solution():
    rng = np.random.default_rng(0)
    x, y, x_new = rng.normal(size=(30, 50)), rng.normal(size=(30, 3)), rng.normal(size=(7, 50))
    ridge = DualRidge(x)
    xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
    alpha = 0.3 * np.trace(xs @ xs.T) / len(xs)
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(50), xs.T @ (y - y.mean(0)))  # primal ridge
    expected = ((x_new - x.mean(0)) / (x.std(0) + 1e-8)) @ w + y.mean(0)
    np.testing.assert_allclose(ridge.predict(y, x_new, 0.3), expected, rtol=1e-7, atol=1e-9)


def test_identity_splits_are_disjoint_and_cover_every_image():
    identity = np.repeat(np.arange(10), 3)
    fit, val, test = identity_splits(identity, seed=1)
    assert (fit.astype(int) + val + test == 1).all()
    assert [len(np.unique(identity[m])) for m in (fit, val, test)] == [6, 2, 2]
    assert not set(identity[fit]) & set(identity[test])


def _linear_world(n=120, d=40, seed=0):
    """Features, identities and targets that are exact linear functions of the features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    mean_shape = rng.uniform(10, 50, size=(68, 2))
    pts = mean_shape + (x[:, :4] @ rng.normal(size=(4, 136))).reshape(n, 68, 2)
    return x, np.repeat(np.arange(n // 4), 4), pts, x[:, 5:8] * 10.0


def test_ridge_probes_read_linear_targets_and_score_noise_at_the_floor():
    x, identity, pts, pose = _linear_world()
    splits = identity_splits(identity, seed=0)
    nme, floor = ridge_probe("landmarks_nme", x, pts, splits)
    assert nme < 0.05 * floor  # linear in the features: near-exact
    mae, pose_floor = ridge_probe("pose_mae", x, pose, splits)
    assert mae < 0.05 * pose_floor
    icc, zero = ridge_probe("au_icc", x, pose, splits)
    assert icc > 0.99 and zero == 0.0
    noise = np.random.default_rng(5).normal(size=x.shape)
    nme_noise, floor_noise = ridge_probe("landmarks_nme", noise, pts, splits)
    assert nme_noise > 0.9 * floor_noise  # nothing to read: the mean shape


def test_expression_probe_is_a_linear_classifier():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 200)
    x = np.eye(8)[labels] * 3 + rng.normal(size=(200, 8)) * 0.1
    splits = identity_splits(np.arange(200) // 2, seed=0)
    acc, floor = ridge_probe("expression_acc", x, labels, splits)
    assert acc == 1.0
    test = splits[2]
    train = splits[0] | splits[1]
    assert floor == pytest.approx(np.mean(labels[test] == np.bincount(labels[train]).argmax()))


def _write_probe_set(root, rows):
    """labels.csv in the probe layout: rows of (image array, identity, expression, pose, aus, landmarks)."""
    header = ["path", "identity", "expression", "yaw", "pitch", "roll"] + [f"au{a}" for a in (1, 2)] + \
        [f"{c}{i}" for i in range(68) for c in "xy"]
    lines = [",".join(header)]
    for i, (image, ident, expr, pose, aus, pts) in enumerate(rows):
        Image.fromarray(image).save(os.path.join(root, f"{i}.png"))
        lines.append(",".join([f"{i}.png", str(ident), str(expr)] + [str(v) for v in (*pose, *aus, *pts.ravel())]))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_probe_set_maps_points_through_resize_and_centre_crop(tmp_path):
    """An 80 x 40 (W x H) image at size 20: scale 0.5, then 10 px cut from the left of the 40 x 20 resize."""
    pts = np.tile([[30.0, 10.0]], (68, 1))
    pts[0] = (50.0, 30.0)
    image = np.zeros((40, 80, 3), np.uint8)
    _write_probe_set(tmp_path, [(image, 0, 1, (10, 0, 0), (0.5, 1.0), pts)] * 2)
    probe_set = ProbeSet.from_labels_csv(str(tmp_path), 20)
    assert probe_set.images.shape == (2, 3, 20, 20) and probe_set.images.dtype == torch.uint8
    np.testing.assert_allclose(probe_set.targets["landmarks_nme"][0, :2], [[15.0, 15.0], [5.0, 5.0]])
    np.testing.assert_allclose(probe_set.targets["au_icc"][0], [0.5, 1.0])
    assert probe_set.targets["expression_acc"].tolist() == [1, 1]


def test_non_finite_label_names_the_file_and_line(tmp_path):
    pts = np.zeros((68, 2))
    pts[3, 0] = np.nan
    good = np.ones((68, 2))
    image = np.zeros((8, 8, 3), np.uint8)
    _write_probe_set(tmp_path, [(image, 0, 0, (0, 0, 0), (0, 0), good), (image, 0, 0, (0, 0, 0), (0, 0), pts)])
    with pytest.raises(ValueError, match=r"labels.csv:3: non-finite"):
        ProbeSet.from_labels_csv(str(tmp_path), 8)


def test_probes_on_the_synthetic_probe_set_and_plot(synthetic_root, tmp_path):
    probes = Probes(root=str(synthetic_root / "probe"), size=32, k=2)
    probe_set = probes.sets["labelled"]
    assert len(probe_set.images) == 12 and len(np.unique(probe_set.identity)) == 4  # tiny preset: 4 x 3
    pts = probe_set.targets["landmarks_nme"]
    assert pts.min() >= 0 and pts.max() <= 31  # the 68 points lie inside the 32 px probe image
    backbone = build_backbone("resnet18").train()
    scores = probes.run(backbone, torch.device("cpu"))
    assert backbone.training  # mode restored
    assert set(scores) == {"identity_knn", "landmarks_nme", "au_icc", "pose_mae", "expression_acc"}
    assert probes.floors["identity_knn"] == 0.25 and probes.seconds > 0
    assert all(np.isfinite(v) for k, v in scores.items() if k != "au_icc")
    history = [{"step": 0, **scores}, {"step": 10, **scores}]
    plot_probes(history, probes.floors, str(tmp_path / "probes.png"))
    assert Image.open(tmp_path / "probes.png").size[0] > 500
