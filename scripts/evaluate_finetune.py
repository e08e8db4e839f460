"""The fine-tune protocol of the backbone evaluation harness (issue 20; paper §3.3 "fine-tuning", App. A.3): each
(task, dataset, fraction) cell is the task's own trainer, run as the table scripts run their cells.

- ``SEARCH=1`` (the default on real data, as the paper): ``scripts/sweep.py`` searches lr x {E/2, E, 2E} x
  backbone-relative lr {0.1, 1} (``sweep_tasks.default_grid``; ``SEARCH_GRID`` replaces it) on a validation
  split carved from the cell's own training data, then refits the chosen setting on the whole cell; the refit's
  test metric is the cell's number and its ``search.json`` holds the choice. E is the config's
  ``optim.epochs`` (``--set optim.epochs=N`` changes it).
- ``SEARCH=0`` (the default with ``--synthetic``): one run at the config's setting.
Runs live in OUT/finetune/<backbone>/<task>_<dataset>_<fraction>[.search]/ (the linear protocol's landmark
heads in OUT/linear/...); a finished cell (its metrics.json) is not trained again. The trainer gets the backbone
as ``model.init`` (any layout ``common.backbone`` reads) and ``model.arch``; a ``--model module:function``
backbone cannot be fine-tuned by the trainers and is refused.
The number read from each trainer's metrics.json (``sweep_tasks.TASKS[task]["test"]``) is the linear protocol's
metric on the same test set: 300W private (else full) / WFLW test / AFLW full NME, ICC on DISFA fold 0 / BP4D
devel, AffectNet accuracy and valence / arousal CCC, IJB-B / IJB-C TAR@FAR=1e-4 (one trainer run on DATA/VGGFace2,
evaluated on both), AFLW2000-3D NME68.
"""
import json
import os
import shlex
import subprocess
import sys

from common.logger import log
from scripts.sweep_tasks import TASKS, default_grid, run_logged, without_axis

SWEEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweep.py")


def cell_metrics(bench, metrics) -> dict:
    """The harness's metric names from a trainer's metrics.json (``sweep_tasks``' test read-out)."""
    task = bench.trainer["task"]
    test = TASKS[task]["test"](metrics)
    if task == "landmarks":
        return {bench.metric: test.get(f"{bench.test_split}.{bench.metric}")}
    if task == "au_intensity":
        return {"icc_mean": test["icc_mean"]}
    if task == "emotion":
        return {k: test[k] for k in ("accuracy", "valence_ccc", "arousal_ccc")}
    if task == "face_recognition":
        return {"tar@1e-4": test.get(f"{bench.dataset}.tar@0.0001")}
    return {"nme68": test["aflw2000.mean"]}


def search_enabled(synthetic) -> bool:
    """SEARCH from the environment; default 1 on real data, 0 on the synthetic benchmark (as scripts/common.sh)."""
    return os.environ.get("SEARCH", "0" if synthetic else "1") == "1"


def _overrides(bench, args, fraction, adaptation):
    """The trainer's overrides of one cell: the bench's data, the backbone and its adaptation, the fraction, the
    task's own checkpoint selection off (a config's ``data.val_split`` may name a test split;
    ``sweep_tasks.TASKS``), then ``--set``."""
    frozen = ["model.adaptation=linear"] if adaptation == "linear" else []   # FR / 3D configs only fine-tune
    return [*bench.trainer["overrides"], f"model.init={args.init}", f"model.arch={args.arch}", *frozen,
            f"data.fraction={fraction}", *TASKS[bench.trainer["task"]]["off"], *args.set]


def command(bench, args, fraction, out, search, adaptation="finetune"):
    """One cell's command: a sweep (search) or one training run, into ``out``. With a frozen backbone
    (``adaptation="linear"``) the default grid drops the backbone-relative lr."""
    task, config = bench.trainer["task"], bench.trainer["config"]
    overrides = _overrides(bench, args, fraction, adaptation)
    launch = shlex.split(args.launch) if args.launch else [sys.executable, "-m"]
    if not search:
        return [*launch, f"{task}.train", "--config", config, *overrides, f"out={out}"]
    from common.config import load_config
    grid = os.environ.get("SEARCH_GRID") or default_grid(task, load_config(config, overrides).optim.epochs)
    if adaptation == "linear":
        grid = without_axis(grid, "backbone_lr_mult")
    return [sys.executable, SWEEP, "--task", task, "--config", config, "--grid", grid, "--out", out + ".search",
            "--final-out", out, "--launch", shlex.join(launch), *overrides]


def run_cell(bench, fraction, *, args, name, adaptation="finetune"):
    """(metrics, run folder) of one cell of backbone ``name`` trained by the task's trainer with ``adaptation``
    (finetune, or linear: the paper's frozen backbone and trained head), or read from a finished run."""
    run_name = getattr(bench, "run_name", f"{bench.task}_{bench.dataset}")   # IJB-B and IJB-C share one run
    out = os.path.join(args.out, adaptation, name, f"{run_name}_{fraction}")
    search = search_enabled(args.synthetic)
    metrics_path = os.path.join(out, "metrics.json")
    if not os.path.isfile(metrics_path):
        log(f"{adaptation} {bench.name} {fraction} ({'search' if search else 'one run'}), log {out}.log")
        run_logged(command(bench, args, fraction, out, search, adaptation), out + ".log")
    with open(metrics_path) as f:
        metrics = cell_metrics(bench, json.load(f))
    if search:
        with open(os.path.join(out, "search.json")) as f:
            metrics["chosen"] = json.load(f)["chosen"]
    return metrics, out


def count(bench, fraction, *, args, adaptation="finetune") -> dict:
    """{"runs", "epochs"} of one cell for DRY_RUN: ``sweep.py --count`` (search), else 1 run of E epochs."""
    from common.config import load_config
    overrides = _overrides(bench, args, fraction, adaptation)
    if not search_enabled(args.synthetic):
        return {"runs": 1, "epochs": int(load_config(bench.trainer["config"], overrides).optim.epochs)}
    cmd = command(bench, args, fraction, "dry-run", True, adaptation)
    cmd = cmd[:cmd.index("--final-out")] + ["--count"] + overrides
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
