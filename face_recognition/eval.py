"""IJB-B / IJB-C 1:1 verification of a trained face recognition model (paper §5.1, Table 4).

    python -m face_recognition.eval --benchmark ijbc --root /data/IJB_release/IJBC --checkpoint runs/NAME/last.pth
    python -m face_recognition.eval --config face_recognition/configs/synthetic.yaml data.root=DIR \
        --checkpoint runs/NAME/last.pth                    # benchmarks and roots from the config
    torchrun --nproc_per_node=8 -m face_recognition.eval ...   # features extracted on every rank

The model settings (arch, head, crop size, normalisation) come from the config saved in the
checkpoint, or from --config when given. Writes, in --out (default: the checkpoint's folder),
``<benchmark>_scores.npz`` (scores, labels, template pairs, in pair-file order),
``<benchmark>_roc.png`` and ``metrics.json`` (updated per benchmark, so IJB-B and IJB-C runs
accumulate); the last stdout line is the metrics of this call as JSON.
"""
import json
import os
import sys

import numpy as np

from common import distributed as dist
from common.checkpoint import load_checkpoint
from common.config import Config, ConfigError, cli
from common.files import write_json
from common.logger import log
from common.metrics import roc
from face_recognition.ijb import BENCHMARKS, evaluate_ijb
from face_recognition.model import embedder_from_state


def benchmark_root(data_root, folder):
    """``folder`` under ``data_root`` (an absolute ``folder`` is used as is)."""
    return folder if os.path.isabs(folder) or not data_root else os.path.join(data_root, folder)


def plot_roc(scores, labels, path, title):
    """ROC with a log-FAR axis (1e-6 .. 1), the insightface IJB plot, as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fpr, tpr, _ = roc(scores, labels)
    grid = np.logspace(-6, 0, 400)  # plot at most 400 points, read at the last vertex <= each FAR
    idx = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(grid, tpr[idx], lw=1.5, label=title)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("False Acceptance Rate")
    ax.set_ylabel("True Acceptance Rate")
    ax.set_title("ROC on IJB")
    ax.grid(True, which="major", ls="--", lw=0.5)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def save_results(out, benchmark, metrics, scores, labels, pairs, name):
    """Rank 0: scores npz, ROC PNG, and ``metrics.json`` updated with this benchmark's entry."""
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{benchmark}_scores.tmp{os.getpid()}.npz")
    np.savez(tmp, scores=scores, labels=labels, pairs=pairs)
    os.replace(tmp, os.path.join(out, f"{benchmark}_scores.npz"))
    plot_roc(scores, labels, os.path.join(out, f"{benchmark}_roc.png"), f"{name} {benchmark.upper()}")
    path = os.path.join(out, "metrics.json")
    merged = {}
    if os.path.isfile(path):
        with open(path) as f:
            merged = json.load(f)
    merged[benchmark] = metrics
    write_json(path, merged)


def run_benchmarks(embedder, roots, *, size, mean, std, batch_size, num_workers, device, out, name):
    """Evaluate ``embedder`` on each (benchmark, root) and save the results; returns {benchmark: metrics}
    on rank 0 (an empty dict elsewhere)."""
    results = {}
    for benchmark, root in roots.items():
        result = evaluate_ijb(embedder, root, benchmark, size=size, mean=mean, std=std,
                              batch_size=batch_size, num_workers=num_workers, device=device)
        if result is None:  # not rank 0
            continue
        metrics, scores, labels, pairs = result
        save_results(out, benchmark, metrics, scores, labels, pairs, name)
        tars = "  ".join(f"{far}: {100 * tar:.2f}" for far, tar in metrics["tar_at_far"].items())
        log(f"{benchmark.upper()} TAR (%) @ FAR  {tars}  ({metrics['pairs']} pairs, "
            f"{metrics['unreadable']} unreadable images)")
        results[benchmark] = metrics
    return results


EXTRA_ARGS = [
    ("--checkpoint", dict(required=True, help="face_recognition checkpoint (runs/NAME/last.pth)")),
    ("--benchmark", dict(choices=BENCHMARKS, action="append",
                         help="ijbb or ijbc (repeatable); default: eval.benchmarks of the config")),
    ("--root", dict(help="the IJBB / IJBC folder (loose_crop/, meta/); only with one --benchmark")),
    ("--out", dict(help="output folder (default: the checkpoint's folder)")),
    ("--batch-size", dict(type=int, help="images per batch and process (default: eval.batch_size)")),
]


def parse(argv=None):
    """(cfg or None, args) from ``[--config C] --checkpoint P [options] key=value ...`` (common.config.cli;
    without --config the checkpoint's own config is used)."""
    return cli("IJB-B / IJB-C 1:1 verification (paper Table 4)", extra_args=EXTRA_ARGS, argv=argv,
               config_required=False)


def main(argv=None):
    cfg, args = parse(argv)
    try:
        state = load_checkpoint(args.checkpoint)
        if cfg is None:
            cfg = Config.from_dict(state.get("config") or {})
            if not cfg:
                raise ConfigError(f"{args.checkpoint} holds no config: pass --config")
        benchmarks = args.benchmark or list(cfg.eval.benchmarks)
        if args.root and len(benchmarks) != 1:
            raise ConfigError("--root names one benchmark's folder: give exactly one --benchmark")
        roots = {b: args.root or benchmark_root(cfg.data.root, cfg.data[b]) for b in benchmarks}
        for b, root in roots.items():
            if not os.path.isdir(root):
                raise FileNotFoundError(f"{b.upper()} folder not found: {root}")
        embedder = embedder_from_state(state, args.checkpoint, arch=cfg.model.arch,
                                       embedding_dim=cfg.model.embedding_dim, head=cfg.model.head)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, AttributeError) as e:
        print(f"face_recognition.eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    info = dist.init()
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    results = run_benchmarks(embedder.to(info.device), roots, size=cfg.data.size, mean=cfg.data.mean,
                             std=cfg.data.std, batch_size=args.batch_size or cfg.eval.batch_size,
                             num_workers=cfg.data.num_workers, device=info.device, out=out,
                             name=os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint))))
    main_rank = dist.is_main()
    dist.cleanup()
    if main_rank:
        print(json.dumps(results, sort_keys=True), flush=True)
    return results


if __name__ == "__main__":
    main()
