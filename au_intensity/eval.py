"""Evaluate an AU-intensity checkpoint, or pool the DISFA fold runs (paper §5.3, Tables 3, 7, 8, 10, 11).

    python -m au_intensity.eval --config au_intensity/configs/disfa.yaml data.root=DIR data.fold=0 \
        --checkpoint runs/NAME/last.pth [--split test] [--out DIR]
    python -m au_intensity.eval --config au_intensity/configs/disfa.yaml --pool RUN_F0 RUN_F1 RUN_F2 --out DIR

The first form writes predictions.npz and metrics.json (per-AU ICC(3,1) and MAE) into --out
(default: the checkpoint's folder). The second concatenates the runs' test predictions and scores
them together, the DISFA protocol of the paper's group (anchors_recog_au_emotion.md §4.3), and
records the mean of the per-fold ICCs beside it. The metrics JSON is the last line of stdout.
"""
import os

from au_intensity.data import LAYOUT_KEYS, check_boxes, split_dataset
from au_intensity.engine import pool_runs, test_and_save
from au_intensity.model import AUIntensityNet
from common import distributed
from common.backbone import build_backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from common.finetune import write_metrics


def main(cfg, checkpoint=None, split=None, out=None, pool=()):
    clip = tuple(cfg.eval.clip)
    if pool:
        metrics = pool_runs(pool, clip)
        write_metrics(out or cfg.out, {"dataset": cfg.data.dataset, "split": "pooled", **metrics})
        return metrics
    if not checkpoint:
        raise SystemExit("give --checkpoint PATH (or --pool RUN ...)")
    data = cfg.data
    check_boxes(data)
    info = distributed.init()
    split = split or data.test_split
    dataset = split_dataset(split, **{k: data[k] for k in LAYOUT_KEYS})
    if dataset is None:
        raise SystemExit(f"split {split!r} of {data.dataset} fold {data.fold} ({data.fold_scheme}) has no subjects")
    model = AUIntensityNet(build_backbone(cfg.model.arch, "scratch"), len(dataset.index.aus))
    state = load_checkpoint(checkpoint)
    if "model" not in state:
        raise SystemExit(f"{checkpoint}: not an au_intensity.train checkpoint (no 'model' entry)")
    model.load_state_dict(state["model"])
    model.to(info.device)
    extra = {"dataset": data.dataset, "split": split, "fold": data.fold, "fold_scheme": data.fold_scheme,
             "checkpoint": os.path.abspath(checkpoint), "epoch": state.get("epoch")}
    metrics = test_and_save(model, dataset, batch_size=cfg.eval.batch_size, workers=data.num_workers,
                            device=info.device, amp=cfg.train.amp and info.device.type == "cuda", clip=clip,
                            out_dir=out or os.path.dirname(os.path.abspath(checkpoint)), extra=extra)
    distributed.cleanup()
    return metrics


if __name__ == "__main__":
    cfg, args = cli("AU intensity evaluation (paper §5.3)", extra_args=[
        ("--checkpoint", {"help": "checkpoint to evaluate (our au_intensity.train file)"}),
        ("--split", {"help": "split to evaluate (default data.test_split)"}),
        ("--out", {"help": "folder for metrics.json / predictions.npz (default: the checkpoint's folder)"}),
        ("--pool", {"nargs": "+", "default": (), "metavar": "RUN",
                    "help": "run folders whose test predictions to pool (put key=value overrides before --pool)"}),
    ])
    main(cfg, checkpoint=args.checkpoint, split=args.split, out=args.out, pool=args.pool)
