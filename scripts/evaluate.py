"""One command to evaluate any face backbone on the paper's five tasks (issue 20; paper §3.3, §5, App. A.3): the
linear protocol at feature-cache speed, the fine-tune protocol through the task trainers, or both.

    python -m scripts.evaluate --init PATH|imagenet|scratch --data DATA --tasks all --fractions 1.0,0.1,0.02 \
        --protocol linear|finetune|both --out runs/eval [--name NAME] [--arch resnet50] [--model module:function] \
        [--set KEY=VALUE] [--launch "torchrun --nproc_per_node=8 -m"] [--synthetic]

``--init``: anything ``common.backbone.build_backbone`` reads (our checkpoints, FRL / SwAV / MoCo / torchvision /
timm ResNet state dicts, ``scratch``, ``imagenet``). ``--model module:function``: any nn.Module factory (called
with no argument) whose forward gives pooled features (N, D); for a ResNet the tap is the ``fc`` input (layer4
globally average-pooled). A module with ``feature_maps`` (our Backbone) also gives the spatial features that the
landmarks ridge uses; for one without, landmarks use its pooled features.
``DATA`` holds the datasets' folders: DISFA/ BP4D/ AffectNet/ IJBB/ IJBC/ 300W/ WFLW/ AFLW/ 300W_LP/ AFLW2000/
(common.synthetic's names), the 3D model file that reconstruction3d's config names (e.g. BFM.mat) and, for the
fine-tune protocol's face recognition, VGGFace2/; a task whose folder is absent or unreadable is skipped and
listed in the report with the reason (reading a bench's annotations with the task's loader is its data check).
``--synthetic``: writes (once) the ``small`` synthetic preset into DATA (default OUT/data), ResNet-18, the tasks'
synthetic.yaml sizes (<= 64 px): the linear harness on CPU in a few minutes. ``DRY_RUN=1`` prints the cells
and the compute (feature extractions x images; fine-tune training runs x epochs) without running.

Outputs: OUT/cache/<key>/ (common.feature_cache), OUT/results/<name>.json and <name>.finetune.json (every
finished cell; a rerun skips them, ``--force`` recomputes linear cells from the cache), OUT/finetune/<name>/ (the
trainers' runs), OUT/report.md and OUT/radar.png (scripts/evaluate_report.py). The protocols are in
scripts/evaluate_linear.py and scripts/evaluate_finetune.py. The last stdout line is the results JSON,
{protocol: results}.
"""
import argparse
import importlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.backbone import build_backbone  # noqa: E402
from common.feature_cache import FeatureCache, keys_sha256  # noqa: E402
from common.files import write_json  # noqa: E402
from common.finetune import select_training_keys  # noqa: E402
from common.logger import log  # noqa: E402
from common.weights import sha256_file  # noqa: E402
from scripts.evaluate_features import extract  # noqa: E402
from scripts.evaluate_finetune import count, run_cell, search_enabled  # noqa: E402
from scripts.evaluate_linear import BENCHES  # noqa: E402
from scripts.evaluate_report import write_report  # noqa: E402

MIN_TRAIN_ROWS = 5   # fewer training rows cannot hold out a validation part for the ridge penalty
SYNTHETIC_ONLY = ("disfa", "bp4d", "affectnet", "ijbb", "ijbc", "300w", "wflw", "aflw19", "300w_lp", "aflw2000_3d")


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m scripts.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--init", default="scratch", help="scratch | imagenet | checkpoint path (any known layout)")
    p.add_argument("--arch", default=None, help="resnet50 (default) | resnet18 (default with --synthetic)")
    p.add_argument("--model", default="", help="module:function returning an nn.Module (overrides --init/--arch)")
    p.add_argument("--data", default="", help="folder of the datasets (the module docstring lists them)")
    p.add_argument("--tasks", default="all", help=f"all or a comma list of {','.join(BENCHES)} or task/dataset")
    p.add_argument("--fractions", default="1.0,0.1,0.02", help="training fractions (App. A.3 few-shot regimes)")
    p.add_argument("--protocol", default="linear", choices=["linear", "finetune", "both"],
                   help="linear (ridge on cached features) | finetune (the task trainers; SEARCH=1 searches each cell) "
                        "| both")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="finetune: a config override for every trainer (e.g. optim.epochs=20); repeatable")
    p.add_argument("--launch", default="", help='trainer launcher, e.g. "torchrun --nproc_per_node=8 -m"')
    p.add_argument("--no-landmarks-head", dest="landmarks_head", action="store_false",
                   help="linear: skip the paper's linear landmarks protocol (frozen backbone, heatmap head trained by "
                        "landmarks.train); the spatial-feature ridge is still reported")
    p.add_argument("--out", default="runs/eval", help="output folder (cache/, results/, report.md, radar.png)")
    p.add_argument("--name", default="", help="backbone row name (default from --init / --model)")
    p.add_argument("--seed", type=int, default=0, help="subset, hold-out and scratch-init seed")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the extraction")
    p.add_argument("--synthetic", action="store_true", help="the small synthetic preset on CPU, ResNet-18")
    p.add_argument("--force", action="store_true", help="recompute finished cells (features still from the cache)")
    args = p.parse_args(argv)
    args.arch = args.arch or ("resnet18" if args.synthetic else "resnet50")
    args.fractions = [float(f) for f in args.fractions.split(",")]
    if not args.data:
        if not args.synthetic:
            p.error("--data is required (or --synthetic)")
        args.data = os.path.join(args.out, "data")
    return args


def build_model(args):
    """(model, identity dict for the cache key and the report) of --model or --init/--arch."""
    if args.model:
        module, _, function = args.model.partition(":")
        if not function:
            raise SystemExit(f"--model {args.model!r}: expected module:function")
        torch.manual_seed(args.seed)
        model = getattr(importlib.import_module(module), function)()
        return model, {"model": args.model, "seed": args.seed}
    torch.manual_seed(args.seed)             # a scratch init is a function of the seed
    model = build_backbone(args.arch, args.init)
    ident = {"arch": args.arch, "init": args.init}
    if args.init == "scratch":
        ident["seed"] = args.seed
    elif args.init != "imagenet":
        ident = {"arch": args.arch, "init_sha256": sha256_file(args.init)}
    return model, ident


def default_name(args):
    if args.model:
        return args.model.replace(":", ".")
    if args.init in ("scratch", "imagenet"):
        return f"{args.init}_{args.arch}"
    return os.path.splitext(os.path.basename(args.init))[0]


def ensure_synthetic(data):
    """The small synthetic preset's five datasets in ``data`` (written once; issue 3's common.synthetic)."""
    if os.path.isfile(os.path.join(data, "manifest.json")):
        return
    log(f"writing the small synthetic preset to {data}")
    subprocess.run([sys.executable, "-m", "common.synthetic", "--out", data, "--preset", "small", "--seed", "0",
                    "--only", *SYNTHETIC_ONLY], cwd=ROOT, check=True)


def selected_benches(tasks):
    """[(task, dataset, folder, constructor)] named by --tasks."""
    wanted = None if tasks == "all" else set(tasks.split(","))
    out = []
    for task, entries in BENCHES.items():
        for dataset, folder, make in entries:
            if wanted is None or task in wanted or f"{task}/{dataset}" in wanted:
                out.append((task, dataset, folder, make))
    if not out:
        raise SystemExit(f"--tasks {tasks!r}: none of {list(BENCHES)}")
    return out


def load_benches(args):
    """({name: Bench} whose data loaded, {name: reason} skipped); only annotations are read here."""
    benches, skipped = {}, {}
    for task, dataset, folder, make in selected_benches(args.tasks):
        root = os.path.join(args.data, folder)
        name = f"{task}/{dataset}"
        if not os.path.isdir(root):
            skipped[name] = f"no data: {root} not found"
            continue
        try:
            benches[name] = make(root, args.synthetic)
            benches[name].folder = folder
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            skipped[name] = f"data not readable: {e}".splitlines()[0]
    for name, reason in skipped.items():
        log(f"skip {name}: {reason}")
    return benches, skipped


def bench_cells(bench, fractions):
    return [f"{bench.name}/{f:g}" if "." in f"{f:g}" else f"{bench.name}/{f:.1f}"
            for f in (fractions if bench.per_fraction else [1.0])]


def features(bench, model, ident, cache, args, device):
    """{split: cached feature arrays} of a bench (common.feature_cache)."""
    out = {}
    for split, (dataset, keys) in bench.splits.items():
        root = os.path.abspath(os.path.join(args.data, bench.folder))
        parts = {"backbone": ident, "dataset": bench.name, "root": root,
                 "split": split, "keys_sha256": keys_sha256(keys), "preprocessing": bench.preprocessing,
                 "taps": {"spatial": bench.spatial, "flip_sum": bench.flip_sum, "grid": 2}}

        def compute(dataset=dataset, split=split):
            log(f"extracting {bench.name}/{split}: {len(dataset)} images")
            return extract(model, dataset, batch_size=args.batch_size, workers=args.workers, device=device,
                           spatial=bench.spatial, flip_sum=bench.flip_sum)
        out[split] = cache.get(parts, compute)
    return out


def read_results(path, name, protocol):
    """One results file (OUT/results/NAME[.finetune].json) with its defaults; evaluate_report.load_results reads all."""
    results = {"name": name, "protocol": protocol, "cells": {}, "skipped": {}}
    if os.path.isfile(path):
        with open(path) as f:
            results.update(json.load(f))
    return results


def dry_run(args, benches, results):
    """DRY_RUN=1: the cells still to compute and their cost (feature extractions / fine-tune runs)."""
    for protocol, done in results.items():
        todo = {b: [c for c in bench_cells(bench, args.fractions) if args.force or c not in done["cells"]]
                for b, bench in benches.items()}
        for b, cells in todo.items():
            print("\n".join(f"cell {protocol} {c}" for c in cells))
        cells = sum(map(len, todo.values()))
        if protocol == "linear":
            images = sum(len(ds) * (2 if bench.flip_sum else 1) for b, bench in benches.items() if todo[b]
                         for ds, _ in bench.splits.values())
            heads = [count(benches[b], c.rsplit("/", 1)[1], args=args, adaptation="linear") for b, cs in todo.items()
                     for c in cs if head_cell(benches[b], args)]
            print(f"dry run, linear: {cells} cells, {sum(len(b.splits) for b in benches.values())} feature "
                  f"extractions (at most; cached ones are skipped), {images} images through the backbone; "
                  f"landmark heads: {sum(r['runs'] for r in heads)} training runs, {sum(r['epochs'] for r in heads)} "
                  f"epochs")
        else:   # one entry per training run folder (IJB-B and IJB-C share one face recognition run)
            runs = {(getattr(benches[b], "run_name", b), c.rsplit("/", 1)[1]):
                    count(benches[b], c.rsplit("/", 1)[1], args=args) for b, cs in todo.items() for c in cs}
            runs = list(runs.values())
            print(f"dry run, finetune (SEARCH={int(search_enabled(args.synthetic))}): {cells} cells, "
                  f"{sum(r['runs'] for r in runs)} training runs, {sum(r['epochs'] for r in runs)} epochs")


def head_cell(bench, args) -> bool:
    """True when a linear cell also trains the paper's landmarks head on the frozen backbone (landmarks.train
    model.adaptation=linear: §3.3 "linear layer adaptation", the §5.2 heatmap head)."""
    return bench.task == "landmarks" and args.landmarks_head and not args.model


def run_linear(args, benches, results):
    """Ridge heads on cached frozen features (scripts/evaluate_linear.py) for every cell not yet in ``results``;
    landmark cells also get the paper's linear protocol (``head_cell``) as ``<metric>_head``."""
    model, ident = build_model(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    cache = FeatureCache(os.path.join(args.out, "cache"))
    computed = []
    for bench_name, bench in benches.items():
        cells = [c for c in bench_cells(bench, args.fractions) if args.force or c not in results["cells"]]
        if not cells:
            continue
        feats = features(bench, model, ident, cache, args, device)
        train_keys = bench.splits["train"][1] if "train" in bench.splits else []
        for cell in cells:
            fraction = float(cell.rsplit("/", 1)[1])
            rows = np.array([], dtype=np.int64)
            if "train" in feats:
                rows = select_training_keys(train_keys, fraction=fraction, seed=args.seed, subset_file="",
                                            out_dir=None)  # the few-shot subset (App. A.3)
                rows = rows[feats["train"]["seen"][rows]]
            if "train" in feats and len(rows) < MIN_TRAIN_ROWS:
                metrics, floor = {m: None for m in bench.metrics}, {}
                log(f"{cell}: {len(rows)} training rows, too few for a ridge head; the cell is left empty")
            else:
                metrics, floor = bench.score(feats, rows, args.seed)
            results["cells"][cell] = {"metrics": metrics, "floor": floor, "n_train": int(len(rows))}
            if head_cell(bench, args):
                head, run = run_cell(bench, cell.rsplit("/", 1)[1], args=args, name=results["name"],
                                     adaptation="linear")
                metrics[f"{bench.metric}_head"] = head[bench.metric]
                results["cells"][cell]["head_run"] = os.path.abspath(run)
            computed.append(cell)
            log(f"{results['name']} linear {cell}: {json.dumps(metrics)} (floor {json.dumps(floor)})")
    results.update(backbone=ident, last_run={"cache": dict(cache.stats), "cells_computed": computed})


def run_finetune(args, benches, results):
    """The task trainers (scripts/evaluate_finetune.py) for every cell not yet in ``results``."""
    computed = []
    for bench_name, bench in benches.items():
        missing = getattr(bench, "train_data", None)
        if missing and not os.path.isdir(missing):
            results["skipped"][bench_name] = f"no fine-tuning data: {missing} not found"
            log(f"skip fine-tune {bench_name}: {results['skipped'][bench_name]}")
            continue
        for cell in bench_cells(bench, args.fractions):
            if not args.force and cell in results["cells"]:
                continue
            metrics, run = run_cell(bench, cell.rsplit("/", 1)[1], args=args, name=results["name"])
            results["cells"][cell] = {"metrics": metrics, "run": os.path.abspath(run)}
            computed.append(cell)
            log(f"{results['name']} finetune {cell}: {json.dumps(metrics)}")
    results.update(backbone={"arch": args.arch, "init": args.init}, last_run={"cells_computed": computed})


def main(argv=None):
    """{protocol: results} of the run; results/<name>.json (linear) and results/<name>.finetune.json hold them."""
    args = parse(argv)
    if args.model and args.protocol != "linear":
        raise SystemExit("--protocol finetune: the task trainers fine-tune --init checkpoints; a --model factory "
                         "can only be evaluated with --protocol linear")
    if args.synthetic and os.environ.get("DRY_RUN") != "1":
        ensure_synthetic(args.data)
    benches, skipped = load_benches(args)
    name = args.name or default_name(args)
    protocols = ["linear", "finetune"] if args.protocol == "both" else [args.protocol]
    paths = {p: os.path.join(args.out, "results", name + ("" if p == "linear" else f".{p}") + ".json")
             for p in protocols}
    results = {p: read_results(paths[p], name, p) for p in protocols}
    if os.environ.get("DRY_RUN") == "1":
        return dry_run(args, benches, results)
    for protocol in protocols:
        start = time.time()
        results[protocol]["skipped"] = dict(skipped)
        (run_linear if protocol == "linear" else run_finetune)(args, benches, results[protocol])
        results[protocol]["last_run"]["seconds"] = round(time.time() - start, 3)
        write_json(paths[protocol], results[protocol])
    log(f"report: {write_report(args.out)}")
    print(json.dumps(results, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
