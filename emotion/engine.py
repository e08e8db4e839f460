"""Emotion evaluation (paper App. D.1, Table 12): expression accuracy; valence / arousal RMSE, SAGR, PCC, CCC.

EmoNet protocol (shared/research/anchors_recog_au_emotion.md §5.2, ``emonet/evaluation.py``): the
expression is the argmax on the plain image; valence and arousal may be averaged with the
prediction on the mirrored image (``flip_va``) and are clipped to [-1, 1]; metrics are computed
over the whole evaluated set, V/A only over rows whose V/A are annotated.
"""
import os

import numpy as np

from common import distributed
from common.engine import make_loader
from common.finetune import predict, write_metrics
from common.metrics import accuracy, ccc, pcc, rmse, sagr

PREDICTIONS = "predictions.npz"


def emotion_metrics(logits, valence, arousal, table, rows):
    """Metrics of predictions for ``rows`` of ``table`` (indices of the evaluated, readable images)."""
    metrics = {"accuracy": round(accuracy(logits[rows], table["expression"][rows]), 4), "images": int(len(rows))}
    va_rows = rows[table["va_valid"][rows]]
    metrics["va_images"] = int(len(va_rows))
    for name, pred in (("valence", valence), ("arousal", arousal)):
        p, g = np.clip(pred[va_rows], -1.0, 1.0), table[name][va_rows].astype(np.float64)
        metrics[name] = {k: round(float(f(p, g)), 4) for k, f in
                         (("rmse", rmse), ("sagr", sagr), ("pcc", pcc), ("ccc", ccc))} if len(va_rows) else None
    return metrics


def evaluate(model, loader, table, *, device, amp=False, flip_va=False):
    """(metrics, {name: per-image array}) of ``model`` on one parsed split; unreadable images are counted."""
    out = predict(model, loader, device=device, n_items=len(table["paths"]), amp=amp, flip=flip_va)
    valence, arousal = out["valence"], out["arousal"]
    if flip_va:  # V/A of the image and its mirror averaged; the expression uses the image only (EmoNet)
        valence, arousal = (valence + out["valence_flip"]) / 2, (arousal + out["arousal_flip"]) / 2
    rows = np.flatnonzero(out["seen"])
    metrics = emotion_metrics(out["logits"], valence, arousal, table, rows)
    metrics.update(unreadable=int((~out["seen"]).sum()), flip_va=bool(flip_va))
    return metrics, {"logits": out["logits"], "valence": valence, "arousal": arousal}


def test_and_save(model, dataset, *, batch_size, workers, device, amp, flip_va, out_dir, extra):
    """Evaluate ``dataset`` (an AffectNetFaces), write predictions.npz and metrics.json; return the metrics."""
    loader = make_loader(dataset, batch_size=batch_size, train=False, workers=workers, seed=0)
    metrics, pred = evaluate(model, loader, dataset.table, device=device, amp=amp, flip_va=flip_va)
    metrics.update(extra)
    if distributed.is_main():
        os.makedirs(out_dir, exist_ok=True)
        t = dataset.table
        tmp = os.path.join(out_dir, f".{PREDICTIONS}.tmp{os.getpid()}.npz")
        np.savez(tmp, keys=np.asarray(t["keys"]), logits=pred["logits"].astype(np.float32),
                 valence=pred["valence"].astype(np.float32), arousal=pred["arousal"].astype(np.float32),
                 expression=t["expression"], valence_gt=t["valence"], arousal_gt=t["arousal"], va_valid=t["va_valid"])
        os.replace(tmp, os.path.join(out_dir, PREDICTIONS))
    write_metrics(out_dir, metrics)
    return metrics
