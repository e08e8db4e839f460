"""AU-intensity evaluation (paper §5.3, Tables 3, 7, 8, 10, 11): ICC(3,1) and MAE per AU, pooled over DISFA folds.

Protocol (shared/research/anchors_recog_au_emotion.md §4): predictions are clipped to the label
range 0-5; ICC(3,1) (consistency, ground truth and prediction as the two raters) and MAE are
computed per AU over all evaluated frames and then averaged over AUs. For DISFA the paper's group
reports ICC on the pooled predictions of the three test folds (§4.3, [thread]); the mean of the
per-fold ICCs is recorded beside it.
"""
import os

import numpy as np

from common import distributed
from common.engine import make_loader
from common.finetune import predict, write_metrics
from common.metrics import icc31, mae

PREDICTIONS = "predictions.npz"


def au_metrics(pred, gt, aus, clip=(0.0, 5.0)):
    """{"icc": {"AUn": v}, "icc_mean", "mae": {...}, "mae_mean", "frames"} of (N, K) arrays.

    An AU whose labels and clipped predictions are both constant has no ICC (None); the mean is
    over the other AUs."""
    pred = np.clip(np.asarray(pred, dtype=np.float64), *clip)
    gt = np.asarray(gt, dtype=np.float64)
    icc = np.atleast_1d(icc31(pred, gt))
    err = np.atleast_1d(mae(pred, gt))
    names = [f"AU{au}" for au in aus]
    per_au = [None if not np.isfinite(v) else float(v) for v in icc.round(4) + 0.0]  # NaN: 0/0
    return {"icc": dict(zip(names, per_au)), "icc_mean": round(float(np.nanmean(icc)), 4) + 0.0,
            "mae": dict(zip(names, err.round(4).tolist())), "mae_mean": round(float(err.mean()), 4),
            "frames": int(len(gt))}


def evaluate(model, loader, index, *, device, amp=False, clip=(0.0, 5.0)):
    """(metrics, predictions (N, K) with NaN rows for unreadable frames) of ``model`` on one split."""
    out = predict(model, loader, device=device, n_items=len(index.keys), amp=amp)
    pred, seen = out["output"].reshape(len(index.keys), -1), out["seen"]
    metrics = au_metrics(pred[seen], index.labels[seen], index.aus, clip)
    metrics["unreadable"] = int((~seen).sum())
    return metrics, pred


def test_and_save(model, dataset, *, batch_size, workers, device, amp, clip, out_dir, extra):
    """Evaluate ``dataset`` (an AUFrames), write predictions.npz and metrics.json (with ``extra``)
    into ``out_dir``; returns the metrics."""
    loader = make_loader(dataset, batch_size=batch_size, train=False, workers=workers, seed=0)
    metrics, pred = evaluate(model, loader, dataset.index, device=device, amp=amp, clip=clip)
    metrics.update(extra)
    if distributed.is_main():
        os.makedirs(out_dir, exist_ok=True)
        save_predictions(os.path.join(out_dir, PREDICTIONS), dataset.index.keys, pred, dataset.index.labels,
                         dataset.index.aus)
    write_metrics(out_dir, metrics)
    return metrics


def save_predictions(path, keys, pred, gt, aus):
    """Per-frame predictions and labels (so any other ICC convention can be recomputed)."""
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, keys=np.asarray(keys), pred=np.asarray(pred, np.float32), gt=np.asarray(gt, np.float32),
             aus=np.asarray(aus))
    os.replace(tmp, path)


def pool_runs(run_dirs, clip=(0.0, 5.0)):
    """Metrics on the concatenated test predictions of several runs (the three DISFA folds), plus
    the per-fold ICC mean. Folds must hold disjoint frames and the same AUs."""
    keys, preds, gts, per_fold, aus = [], [], [], [], None
    for run in run_dirs:
        path = os.path.join(run, PREDICTIONS)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (train or evaluate that fold first)")
        with np.load(path) as z:
            if aus is not None and z["aus"].tolist() != aus:
                raise ValueError(f"{path}: AUs {z['aus'].tolist()} differ from {aus}")
            aus = z["aus"].tolist()
            ok = np.isfinite(z["pred"]).all(axis=1)
            keys += z["keys"][ok].tolist()
            preds.append(z["pred"][ok])
            gts.append(z["gt"][ok])
        per_fold.append(au_metrics(preds[-1], gts[-1], aus, clip)["icc_mean"])
    if len(set(keys)) != len(keys):
        raise ValueError(f"runs {list(run_dirs)} share test frames; pooling needs disjoint folds")
    metrics = au_metrics(np.concatenate(preds), np.concatenate(gts), aus, clip)
    metrics.update(pooled_runs=[os.path.abspath(r) for r in run_dirs], per_fold_icc_mean=per_fold,
                   mean_of_fold_icc=round(float(np.mean(per_fold)), 4))
    return metrics
