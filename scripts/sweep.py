"""Hyper-parameter search for one data point (paper §3.3, Fig. 2): learning rate x schedule length x backbone lr.

    python scripts/sweep.py --task landmarks --config landmarks/configs/300w.yaml \
        --grid lr=1e-4,3e-4,epochs=60,120,backbone_lr_mult=0.1,1 \
        --init scratch=scratch --init ours=runs/swav/backbone.pth --out runs/sweep/300w_0.02 \
        data.root=/data/300W data.fraction=0.02 [--emit shell|slurm] [--launch "torchrun --nproc_per_node=1 -m"]

"This search is repeated for each data point defined by the tuple (task, dataset, pre-training
method and % of training data)" (§3.3). One sweep = one (task, dataset, fraction) and one or more
inits; each init gets its own selection. Grid names: lr, epochs, backbone_lr_mult, schedule,
weight_decay, batch_size (-> optim.*) or any dotted config key. In ``--grid`` a token with "="
starts a key, the tokens after it are more values of that key.

Selection uses a validation set drawn from the data point's training data, never a test set
(scripts/sweep_tasks.py says how, per task). The selected configuration is then trained again on
the whole data point (``--no-refit``: keep the run trained without the held-out keys) and that
run's metrics.json, written by the task's train.py on the test set, is the reported number.
Finished runs are cached under OUT/runs/<hash of the resolved overrides> (a rerun skips them).
Writes OUT/sweep.json and OUT/fig2.png (radar plot: validation metric per combination, one curve
per init); the summary JSON is also the last stdout line. ``--emit shell`` prints the pending
jobs (train && score) one per line; ``--emit slurm`` writes OUT/jobs.txt + OUT/sweep.sbatch (a job
array); rerun without --emit afterwards to select, refit and plot.
"""
import argparse
import hashlib
import itertools
import json
import math
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.config import load_config  # noqa: E402
from common.files import write_json  # noqa: E402
from common.logger import log, progress  # noqa: E402
from common.subsample import save_keys  # noqa: E402
from sweep_plot import radar  # noqa: E402
from sweep_tasks import ALIASES, TASKS, carve, data_point_keys, parse_grid, run_logged  # noqa: E402

VAL_SCRIPT = os.path.join(ROOT, "scripts", "sweep_val.py")


def resolve_key(name, config, task):
    """A grid name as a dotted key of ``config`` (aliases first); raises naming the task when absent."""
    key = ALIASES.get(name, name)
    try:
        _lookup(load_config(config), key)
    except (KeyError, TypeError):
        raise SystemExit(f"sweep: {task} config {config} has no key {key!r} (grid name {name!r}); "
                         f"its train.py cannot search it") from None
    return key


def run_hash(task, config, overrides, resolved, extra=""):
    """Hash of the resolved value of every overridden key (so 1e-4 and 0.0001 are the same run)."""
    values = {o.split("=", 1)[0]: _lookup(resolved, o.split("=", 1)[0]) for o in overrides}
    blob = json.dumps({"task": task, "config": os.path.relpath(os.path.abspath(config), ROOT), "values": values,
                       "extra": extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _lookup(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg


def plan(args, spec, grid):
    """Validation split and the list of jobs: dicts with init, combo, overrides, run dir, commands."""
    base = list(args.overrides)
    cfg0 = load_config(args.config, base)
    if any("=" not in i for i in args.init):
        raise SystemExit(f"sweep: --init takes NAME=VALUE (a model.init value), got {args.init}")
    inits = [i.split("=", 1) for i in args.init] or [["config", str(cfg0.model.init)]]
    split_dir = os.path.join(args.out, "split")
    native = spec["native"](cfg0)
    if native:
        split_overrides, val_args, extra = [], ["--split", native], f"split:{native}"
        validation = {"kind": "split", "split": native}
    else:
        train_keys, val_keys = carve(data_point_keys(cfg0, spec["keys"]), spec["group"], args.val_fraction,
                                     args.val_seed)
        os.makedirs(split_dir, exist_ok=True)
        sha = save_keys(os.path.join(split_dir, "train_keys.txt"), train_keys)
        save_keys(os.path.join(split_dir, "val_keys.txt"), val_keys)
        split_overrides = [f"data.subset_file={os.path.join(split_dir, 'train_keys.txt')}"]
        val_args, extra = ["--keys", os.path.join(split_dir, "val_keys.txt")], f"keys:{sha}"
        validation = {"kind": "held-out training keys", "train": len(train_keys), "val": len(val_keys),
                      "fraction": args.val_fraction, "seed": args.val_seed}
    launch = shlex.split(args.launch) if args.launch else [sys.executable, "-m"]
    jobs = []
    for (name, init), combo in itertools.product(inits, itertools.product(*[v for _, v in grid])):
        point = [f"model.init={init}"] + [f"{k}={v}" for (k, _), v in zip(grid, combo)]
        overrides = base + point + split_overrides + list(spec["off"]) + list(spec.get("search_only", ()))
        resolved = load_config(args.config, overrides)            # type-checks every override
        run_dir = os.path.join(args.out, "runs", run_hash(args.task, args.config, overrides, resolved, extra))
        common = ["--config", args.config, *overrides]
        jobs.append(dict(init_name=name, init=init, combo=dict(zip((k for k, _ in grid), combo)), run_dir=run_dir,
                         point=point, train=launch + [spec["module"], *common, f"out={run_dir}"],
                         val=[sys.executable, VAL_SCRIPT, "--task", args.task, *common, "--checkpoint",
                              os.path.join(run_dir, "last.pth"), *val_args, "--out",
                              os.path.join(run_dir, "val.json")]))
    return jobs, validation, launch


def emit(jobs, kind, out):
    pending = [j for j in jobs if not os.path.isfile(os.path.join(j["run_dir"], "val.json"))]
    lines = [f"{shlex.join(j['train'])} && {shlex.join(j['val'])}" for j in pending]
    if kind == "shell":
        print("\n".join(lines))
        print("# then rerun the same sweep command without --emit: it selects, refits and plots")
        return
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "jobs.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    script = os.path.join(out, "sweep.sbatch")
    with open(script, "w") as f:
        f.write(f"#!/bin/bash\n#SBATCH --job-name=sweep\n#SBATCH --array=0-{max(len(lines) - 1, 0)}\n"
                f"#SBATCH --gres=gpu:1\n#SBATCH --cpus-per-task=8\n#SBATCH --output={out}/slurm-%A_%a.out\n"
                f"cd {shlex.quote(os.getcwd())}\nexport PYTHONPATH={shlex.quote(ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                f'eval "$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(os.path.join(out, "jobs.txt"))})"\n')
    print(f"{len(lines)} jobs: sbatch {script}")


def select(jobs):
    """{init name: (best job, its val result)}: lowest error / highest score on validation."""
    best = {}
    for j in jobs:
        v = j["val_result"]
        key = v["value"] if v["lower_is_better"] else -v["value"]
        key = key if math.isfinite(key) else math.inf            # an undefined score never wins
        if j["init_name"] not in best or key < best[j["init_name"]][0]:
            best[j["init_name"]] = (key, j)
    return {name: j for name, (_, j) in best.items()}


def refit(args, spec, job, launch):
    """Train the selected configuration on the whole data point; returns (run dir, metrics).

    The task's own checkpoint selection stays off (``spec["off"]``, last), so a config whose
    ``data.val_split`` names a test split can never pick the refit's checkpoint on it."""
    overrides = list(args.overrides) + job["point"] + list(spec["off"])
    resolved = load_config(args.config, overrides)
    tag = run_hash(args.task, args.config, overrides, resolved)
    run_dir = args.final_out or os.path.join(args.out, "final", f"{job['init_name']}_{tag}")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(metrics_path):
        run_logged(launch + [spec["module"], "--config", args.config, *overrides, f"out={run_dir}"],
                   os.path.join(run_dir, "stdout.log"))
    write_json(os.path.join(run_dir, "search.json"),
               {"task": args.task, "init": job["init"], "chosen": job["combo"], "validation": job["val_result"],
                "sweep": os.path.abspath(args.out), "refit_overrides": overrides})
    with open(metrics_path) as f:
        return run_dir, json.load(f)


def count(args, grid):
    """{"runs", "epochs", "gpu_hours"}: the sweep's training runs (grid x inits + one refit per init), their
    summed epochs and, with ``--images`` (the full training set), the GPU-hours at ``--img-per-s`` images per
    second per GPU on ``--gpus`` GPUs a run; from the config alone (no data read), for DRY_RUN estimates."""
    inits = max(len(args.init), 1)
    combos = list(itertools.product(*[v for _, v in grid]))
    keys = [k for k, _ in grid]
    cfg = load_config(args.config, list(args.overrides))
    epochs = [int(dict(zip(keys, c)).get("optim.epochs", cfg.optim.epochs)) for c in combos]
    total = inits * (sum(epochs) + max(epochs))
    hours = total * args.images * float(cfg.data.fraction) / args.img_per_s / 3600 * args.gpus
    return {"runs": inits * (len(combos) + 1), "epochs": total, "gpu_hours": round(hours, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--config", required=True)
    parser.add_argument("--grid", action="append", required=True, help="name=v1,v2,name2=v1,... (repeatable)")
    parser.add_argument("--init", action="append", default=[], metavar="NAME=VALUE",
                        help="an initialisation (model.init value) to sweep; one radar curve each")
    parser.add_argument("--out", required=True, help="sweep folder")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of training groups held out")
    parser.add_argument("--val-seed", type=int, default=0)
    parser.add_argument("--launch", default="", help='train launcher, e.g. "torchrun --nproc_per_node=2 -m"')
    parser.add_argument("--emit", choices=("shell", "slurm"), help="print / write the jobs instead of running them")
    parser.add_argument("--no-refit", action="store_true", help="report the selected run itself on test")
    parser.add_argument("--final-out", default="", help="folder of the refit run (one --init only; a table's cell)")
    parser.add_argument("--count", action="store_true",
                        help="print {runs, epochs, gpu_hours} of the sweep (refit at the longest schedule) and exit")
    parser.add_argument("--images", type=int, default=0, help="--count: training images at data.fraction 1")
    parser.add_argument("--img-per-s", type=float, default=1000.0, help="--count: training images/s per GPU")
    parser.add_argument("--gpus", type=int, default=1, help="--count: GPUs per training run")
    parser.add_argument("overrides", nargs="*", help="key=value of the data point (data.root, data.fraction, ...)")
    args = parser.parse_intermixed_args(argv)
    spec = TASKS[args.task]
    grid = [(resolve_key(k, args.config, args.task), v) for k, v in parse_grid(args.grid)]
    if args.final_out and len(args.init) > 1:
        raise SystemExit("sweep: --final-out holds one refit: give one --init")
    if args.count:
        print(json.dumps(count(args, grid)))
        return None
    jobs, validation, launch = plan(args, spec, grid)
    if args.emit:
        return emit(jobs, args.emit, args.out)
    for j in progress(jobs, desc=f"sweep {args.task}"):
        val_path = os.path.join(j["run_dir"], "val.json")
        if not os.path.isfile(val_path):
            run_logged(j["train"], os.path.join(j["run_dir"], "stdout.log"))
            run_logged(j["val"], os.path.join(j["run_dir"], "stdout.log"))
        with open(val_path) as f:
            j["val_result"] = json.load(f)
        log(f"{j['init_name']} {j['combo']}: val {j['val_result']['metric']} {j['val_result']['value']:.4f}")
    summary = {"task": args.task, "config": args.config, "data_point": list(args.overrides),
               "grid": {k: v for k, v in grid}, "validation": validation, "inits": {}}
    for name, job in select(jobs).items():
        run_dir, metrics = (job["run_dir"], _read(job["run_dir"])) if args.no_refit else refit(args, spec, job, launch)
        summary["inits"][name] = {
            "init": job["init"], "best": job["combo"], "best_val": job["val_result"],
            "runs": [{"combo": j["combo"], "val": j["val_result"]["value"], "run_dir": j["run_dir"]}
                     for j in jobs if j["init_name"] == name],
            "test": {"run_dir": run_dir, "refit": not args.no_refit, **spec["test"](metrics)}}
    first = jobs[0]["val_result"]
    radar(os.path.join(args.out, "fig2.png"), summary, metric=first["metric"], lower=first["lower_is_better"])
    write_json(os.path.join(args.out, "sweep.json"), summary)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary


def _read(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


if __name__ == "__main__":
    main()
