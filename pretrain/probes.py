"""Representation probes during pre-training (issue 17; the paper's §4 tasks read out cheaply): closed-form
heads on the frozen backbone's features, fitted on a labelled probe set held apart from the pre-training
images. Monitoring only, not a paper protocol: DINO's k-NN monitor (Caron et al. 2021), made for faces.

Probes (each with its floor, the score of a predictor that ignores the image):
- ``identity_knn``: leave-one-out weighted k-NN top-1 over held-out identities (pooled layer4,
  L2-normalised; pretrain/knn.py); floor 1 / identities.
- ``landmarks_nme``: ridge from spatial features to the 68 points, NME (%) over the outer-eye-corner
  distance (300W's inter-ocular normaliser, shared/research/anchors_landmarks_3d.md §2.1); floor: the
  fitting split's mean shape.
- ``au_icc``: ridge to the 12 DISFA AU intensities, ICC(3,1) per AU averaged (Table 7's metric); floor 0.
- ``pose_mae``: ridge to (yaw, pitch, roll), mean absolute error in degrees; floor: the mean pose.
- ``expression_acc``: a linear (ridge one-vs-all) classifier of the 8 AffectNet classes; floor: the
  majority class.

Spatial features are layer3 and layer4 average-pooled to ``grid`` x ``grid`` cells and concatenated:
landmarks and pose live in where things are, which global pooling removes. Ridge is solved in the dual
(samples < features) with one eigendecomposition; the penalty is chosen on a validation carve-out of
identities, then refitted on fit + validation and scored on the test identities (no identity is in two
parts).

The probe set is ``labels.csv`` + images (the layout of common/synthetic's ``probe`` writer; a real set
written in that layout works the same); ``identity_root`` adds identity folders ROOT/<id>/<image> (e.g.
held-out VGGFace2 identities) to the k-NN probe at scale.
"""
import csv
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from common.metrics.landmarks import nme
from common.metrics.regression import icc31
from pretrain.data import MEAN, STD, MultiCropTransform, load_rgb
from pretrain.knn import identity_folders, knn_accuracy

LOWER_IS_BETTER = {"identity_knn": False, "landmarks_nme": True, "au_icc": False, "pose_mae": True,
                   "expression_acc": False}
_OUTER_EYE_CORNERS = (36, 45)
_ALPHAS = 10.0 ** np.arange(-3.0, 3.5, 0.5)  # x the mean kernel diagonal


def _load_images(paths, size, where):
    """uint8 N x 3 x size x size of the readable ``paths`` (shorter side resized to ``size``, centre crop),
    their indices, and per image (scale, dx, dy) mapping a source pixel p to p * scale - (dx, dy)."""
    images, kept, frames = [], [], []
    for i, path in enumerate(paths):
        img = load_rgb(path)
        if img is None:
            continue
        scale = size / min(img.size)
        w, h = round(img.size[0] * scale), round(img.size[1] * scale)
        img = TF.center_crop(TF.resize(img, [h, w]), [size, size])
        images.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
        kept.append(i)
        frames.append((scale, int(round((w - size) / 2.0)), int(round((h - size) / 2.0))))  # as center_crop
    if not images:
        raise ValueError(f"{where}: no readable probe image")
    return torch.stack(images), np.asarray(kept), np.asarray(frames, dtype=np.float64)


class ProbeSet:
    """Images and labels of the probes. ``targets`` maps a probe name to an (N, ...) array; ``identity``
    groups the images (for the k-NN probe and the identity-disjoint splits)."""

    def __init__(self, images, identity, targets):
        self.images, self.identity, self.targets = images, np.asarray(identity), targets

    @classmethod
    def from_labels_csv(cls, root, size):
        """``root/labels.csv`` (path, identity, expression, yaw, pitch, roll, au*, x0, y0, ...) and its images."""
        path = os.path.join(root, "labels.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"probe set: {path} not found (write one with "
                                    f"`python -m common.synthetic --only probe`)")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        header, rows = rows[0], rows[1:]
        if not rows or header[:6] != ["path", "identity", "expression", "yaw", "pitch", "roll"]:
            raise ValueError(f"{path}: expected a header starting path,identity,expression,yaw,pitch,roll and rows")
        try:
            values = np.asarray([[float(v) for v in r[1:]] for r in rows])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if not np.isfinite(values).all():
            line = 2 + int(np.flatnonzero(~np.isfinite(values).all(1))[0])
            raise ValueError(f"{path}:{line}: non-finite label")
        images, kept, frames = _load_images([os.path.join(root, r[0]) for r in rows], size, path)
        values = values[kept]
        au_cols = [i for i, h in enumerate(header[1:]) if h.startswith("au")]
        first_x = header.index("x0") - 1
        points = values[:, first_x:first_x + 136].reshape(-1, 68, 2) * frames[:, None, :1] - frames[:, None, 1:]
        targets = {"landmarks_nme": points,
                   "au_icc": values[:, au_cols], "pose_mae": values[:, 2:5],
                   "expression_acc": values[:, 1].astype(int)}
        return cls(images, values[:, 0].astype(int), targets)

    @classmethod
    def from_identity_folders(cls, root, size):
        paths, labels, _ = identity_folders(root)
        images, kept, _ = _load_images(paths, size, root)
        return cls(images, labels[kept], {})


def feature_taps(backbone, x, grid: int) -> tuple:
    """(pooled layer4 N x C4, layer3 + layer4 pooled to grid x grid N x (C3 + C4) grid^2) of a normalised batch."""
    maps = backbone.feature_maps(x)[-2:]
    return maps[-1].float().mean(dim=(2, 3)), torch.cat([F.adaptive_avg_pool2d(m.float(), grid).flatten(1)
                                                         for m in maps], 1)


def spatial_features(backbone, images, *, grid: int, batch_size: int, device) -> tuple:
    """``feature_taps`` of uint8 ``images`` (normalised with pretrain's MEAN / STD) in batches, float64 numpy."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    pooled, spatial = [], []
    for start in range(0, len(images), batch_size):
        x = (images[start:start + batch_size].to(device).float() / 255 - mean) / std
        taps = feature_taps(backbone, x, grid)
        pooled.append(taps[0].cpu())
        spatial.append(taps[1].cpu())
    return torch.cat(pooled).double().numpy(), torch.cat(spatial).double().numpy()


def augmented_views(images, *, size, scale, color_strength, seed=0) -> tuple:
    """Two views of each uint8 image (crop at ``scale``, flip, colour at ``color_strength``, grey, blur),
    normalised; drawn with ``seed`` inside a forked RNG, so the training's random streams are untouched."""
    views = MultiCropTransform(sizes=[size], counts=[2], scales=[scale], color_strength=color_strength)
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        pairs = [views(TF.to_pil_image(img)) for img in images]
    random.setstate(state)
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@torch.no_grad()
def cluster_agreement(model, views, *, epsilon: float = 0.05, sinkhorn_iters: int = 3) -> float:
    """SwAV's own task on held-out faces: the fraction of images whose two views get the same prototype
    in the equipartitioned (Sinkhorn) assignment over the set. A random init scores about 1 / K plus what
    colour alone gives; a broken Sinkhorn, loss or augmentation stays near it (tests/test_pretrain_learns.py)."""
    from pretrain.swav import sinkhorn
    was_training = model.training
    model.eval()
    codes = [sinkhorn(model([v])[1], epsilon=epsilon, n_iters=sinkhorn_iters).argmax(1) for v in views]
    model.train(was_training)
    return float((codes[0] == codes[1]).float().mean())


def identity_splits(identity, seed=0, fractions=(0.6, 0.2)):
    """Boolean masks (fit, val, test) that put each identity in one part (60 / 20 / 20 % of identities)."""
    ids = np.unique(identity)
    order = np.random.default_rng(seed).permutation(ids)
    cut = np.round(np.cumsum(fractions) * len(ids)).astype(int)
    parts = np.split(order, cut)
    return tuple(np.isin(identity, p) for p in parts)


class DualRidge:
    """Ridge regression ``W = X^T (X X^T + a I)^-1 Y`` for every penalty ``a`` from one eigendecomposition
    of the (standardised) fit features' kernel; the intercept is the fit targets' mean."""

    def __init__(self, x):
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        self.x = (x - self.mu) / self.sd
        evals, self.evecs = np.linalg.eigh(self.x @ self.x.T)
        self.evals = np.clip(evals, 0, None)
        self.scale = self.evals.sum() / len(self.evals)  # mean kernel diagonal: penalties are relative to it

    def predict(self, y, x_new, alpha):
        """Predictions at ``x_new`` of the ridge fitted to targets ``y`` (N x T) with penalty alpha x scale."""
        y_mean = y.mean(0)
        coef = self.evecs @ ((self.evecs.T @ (y - y_mean)) / (self.evals + alpha * self.scale)[:, None])
        return ((x_new - self.mu) / self.sd) @ (self.x.T @ coef) + y_mean


def _score(name, pred, y):
    """The probe's metric of predictions ``pred`` (N x T) for targets ``y`` (see the module docstring)."""
    if name == "landmarks_nme":
        gt, pts = y.reshape(-1, 68, 2), pred.reshape(-1, 68, 2)
        iod = np.linalg.norm(gt[:, _OUTER_EYE_CORNERS[0]] - gt[:, _OUTER_EYE_CORNERS[1]], axis=1)
        return float(100 * nme(pts, gt, iod).mean())
    if name == "au_icc":
        return float(np.nanmean(icc31(pred, y)))
    if name == "pose_mae":
        return float(np.abs(pred - y).mean())
    if name == "expression_acc":
        return float((pred.argmax(1) == y.argmax(1)).mean())
    raise KeyError(name)


def _as_matrix(name, y, n_classes):
    if name == "expression_acc":
        return np.eye(n_classes)[y]
    return y.reshape(len(y), -1).astype(np.float64)


class SplitRidges:
    """The ridges of one feature matrix ``x`` on the (fit, val, test) ``splits``: one fitted on the fit part
    (to choose the penalty on val) and one on fit + val (scored on test), each eigendecomposed once and
    shared by every probe of a run."""

    def __init__(self, x, splits):
        self.x, self.splits = x, splits
        fit, val, _ = splits
        self.fit, self.train = DualRidge(x[fit]), DualRidge(x[fit | val])

    def probe(self, name, y, n_classes=8) -> tuple:
        """(test score, floor) of the ridge probe ``name`` with its penalty chosen on the validation part."""
        fit, val, test = self.splits
        x, y = self.x, _as_matrix(name, y, n_classes)
        val_scores = [_score(name, self.fit.predict(y[fit], x[val], a), y[val]) for a in _ALPHAS]
        best = _ALPHAS[int(np.nanargmin(val_scores) if LOWER_IS_BETTER[name] else np.nanargmax(val_scores))]
        train = fit | val
        pred = self.train.predict(y[train], x[test], best)
        if name == "au_icc":
            return _score(name, pred, y[test]), 0.0
        floor = np.repeat(y[train].mean(0, keepdims=True), test.sum(), 0)
        return _score(name, pred, y[test]), _score(name, floor, y[test])


def ridge_probe(name, x, y, splits, n_classes=8) -> tuple:
    """(test score, floor) of one ridge probe (``SplitRidges(x, splits).probe``)."""
    return SplitRidges(x, splits).probe(name, y, n_classes)


class Probes:
    """Runs every probe on a backbone: ``run(backbone, device)`` returns {probe: score}; ``floors`` holds
    each probe's floor. Images are decoded once, at construction (a probe set of a few thousand faces)."""

    def __init__(self, *, root=None, identity_root=None, size=64, grid=2, k=10, batch_size=128, seed=0):
        if not root and not identity_root:
            raise ValueError("probes need probe.root (labels.csv + images) or probe.identity_root (identity folders)")
        self.sets = {}
        if root:
            self.sets["labelled"] = ProbeSet.from_labels_csv(root, size)
        if identity_root:
            self.sets["identity"] = ProbeSet.from_identity_folders(identity_root, size)
        self.grid, self.k, self.batch_size = grid, k, batch_size
        labelled = self.sets.get("labelled")
        self.splits = identity_splits(labelled.identity, seed) if labelled else None
        knn_set = self.sets.get("identity", labelled)
        self.floors = {"identity_knn": 1.0 / len(np.unique(knn_set.identity))}
        self.seconds = 0.0

    @torch.no_grad()
    def run(self, backbone, device) -> dict:
        """Scores of every probe on ``backbone`` (eval mode inside; its mode is restored)."""
        start = time.time()
        was_training = backbone.training
        backbone.eval()
        scores = {}
        try:
            for kind, probe_set in self.sets.items():
                pooled, spatial = spatial_features(backbone, probe_set.images, grid=self.grid,
                                                   batch_size=self.batch_size, device=device)
                if kind == "identity" or "identity" not in self.sets:
                    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)
                    scores["identity_knn"] = knn_accuracy(unit, probe_set.identity, k=self.k)
                ridges = SplitRidges(spatial, self.splits) if probe_set.targets else None
                for name, y in probe_set.targets.items():
                    scores[name], self.floors[name] = ridges.probe(name, y)
        finally:
            backbone.train(was_training)
        self.seconds += time.time() - start
        return scores


def build_probes(cfg):
    """``Probes`` of a run's ``probe`` config section, or None when no probe set is configured."""
    if not (cfg.root or cfg.identity_root):
        return None
    return Probes(root=cfg.root, identity_root=cfg.identity_root, size=cfg.size, grid=cfg.grid, k=cfg.k)


def plot_probes(history, floors, path) -> None:
    """``probes.png``: each probe against the step, its step-0 value dashed and its floor dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in LOWER_IS_BETTER if any(n in h for h in history)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, name in zip(axes[0], names):
        ax.plot(steps, [h.get(name, np.nan) for h in history], "o-", ms=3)
        ax.axhline(history[0].get(name, np.nan), ls="--", c="grey", label="random init (step 0)")
        if name in floors:
            ax.axhline(floors[name], ls=":", c="red", label="floor")
        ax.set_title(f"{name} ({'lower' if LOWER_IS_BETTER[name] else 'higher'} is better)", fontsize=8)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
