"""Evaluate a landmark checkpoint (paper §5.2, Tables 5-6): NME, AUC, FR and a CED plot per split.

    python -m landmarks.eval --config landmarks/configs/300w.yaml --checkpoint runs/NAME/last.pth \
        [--dataset 300w --root DIR --split full [--split common ...]] [--flip-test] [--out DIR] [key=value ...]

Defaults come from the config (data.test_dataset or data.dataset, data.test_root or data.root,
data.test_splits). Writes OUT/metrics.json and OUT/ced_<dataset>_<split>.png (OUT defaults to the
checkpoint's folder) and prints the metrics as JSON on the last line of stdout.
"""
import json
import os

import numpy as np

from common import distributed
from common.backbone import Backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from common.files import write_json
from common.landmark_schemes import flip_permutation
from common.logger import log
from landmarks import formats, scores
from landmarks.engine import eval_loader, evaluate, test_splits
from landmarks.heatmap_head import LandmarkModel


def plot_ced(nmes, path, *, title, max_error=0.1):
    """Cumulative error distribution (fraction of images with NME <= x) up to ``max_error``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from common.metrics import ced
    xs = np.linspace(0.0, max_error, 501)
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    ax.plot(xs * 100, ced(nmes, xs), lw=2)
    ax.set(xlabel="NME (%)", ylabel="fraction of images", title=title, xlim=(0, max_error * 100), ylim=(0, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(cfg, args):
    info = distributed.init()
    dataset = args.dataset or cfg.data.test_dataset or cfg.data.dataset
    root = args.root or cfg.data.test_root or cfg.data.root
    splits = args.split or list(cfg.data.test_splits)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    flip_test = args.flip_test or cfg.test.flip_test
    state = load_checkpoint(args.checkpoint)
    if "model" not in state or "head.out.weight" not in state["model"]:
        raise ValueError(f"{args.checkpoint}: not a landmarks checkpoint (no model.head.out.weight)")
    trained = (state.get("config") or {}).get("model") or {}           # the architecture it was trained with
    n_points = formats.N_POINTS[dataset]
    if state["model"]["head.out.weight"].shape[0] != n_points:
        raise ValueError(f"{args.checkpoint} predicts {state['model']['head.out.weight'].shape[0]} points; "
                         f"{dataset} has {n_points}")
    model = LandmarkModel(Backbone(trained.get("arch", cfg.model.arch)), n_points,
                          trained.get("head_width", cfg.model.head_width))
    model.load_state_dict(state["model"], strict=True)
    model.to(info.device)
    size = ((state.get("config") or {}).get("data") or {}).get("input_size", cfg.data.input_size)
    if size != cfg.data.input_size:
        log(f"warning: {args.checkpoint} was trained on {size} px crops, evaluating on {cfg.data.input_size}")
    amp = cfg.train.amp and info.device.type == "cuda"
    results = {"dataset": dataset, "checkpoint": os.path.abspath(args.checkpoint), "flip_test": flip_test,
               "splits": {}}
    for samples in test_splits(dataset, root, splits, cfg.data.box):
        loader = eval_loader(samples, input_size=cfg.data.input_size, box_scale=cfg.data.box_scale,
                             batch_size=args.batch_size, workers=cfg.data.num_workers)
        metrics, primary, _ = evaluate(model, loader, samples, device=info.device, input_size=cfg.data.input_size,
                                       flip_perm=flip_permutation(n_points) if flip_test else None, amp=amp,
                                       decode=cfg.test.decode)
        results["splits"][samples.split] = metrics
        log(f"{dataset}/{samples.split}: {json.dumps(metrics)}")
        if distributed.is_main():
            os.makedirs(out, exist_ok=True)
            plot_ced(primary, os.path.join(out, f"ced_{dataset}_{samples.split}.png"),
                     title=f"{dataset} {samples.split}: {scores.PRIMARY[dataset]}")
    if distributed.is_main():
        write_json(os.path.join(out, "metrics.json"), results)
        print(json.dumps(results, sort_keys=True), flush=True)
    distributed.cleanup()
    return results


EXTRA_ARGS = [
    ("--checkpoint", dict(required=True, help="a landmarks checkpoint (last.pth / best.pth)")),
    ("--dataset", dict(choices=sorted(formats.LOADERS), help="test dataset (default: from the config)")),
    ("--root", dict(help="test dataset root (default: from the config)")),
    ("--split", dict(action="append", help="test split, repeatable (default: data.test_splits)")),
    ("--out", dict(help="output folder (default: the checkpoint's folder)")),
    ("--flip-test", dict(action="store_true", help="average with the mirrored image's heatmaps")),
    ("--batch-size", dict(type=int, default=32, help="per-process evaluation batch")),
]


def parse(argv=None):
    """(cfg, args) from ``--config C --checkpoint P [options] key=value ...``."""
    return cli("Landmark evaluation (paper §5.2)", extra_args=EXTRA_ARGS, argv=argv)


if __name__ == "__main__":
    try:
        main(*parse())
    except (ValueError, FileNotFoundError) as e:   # one clear line (bad file, NaN NME), not a traceback
        raise SystemExit(f"landmarks.eval: {e}")
