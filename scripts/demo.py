"""`make demo`: the paper's pipeline (§3-5) end to end on the built-in synthetic benchmark, sized for 2 CPU cores.

    python scripts/demo.py [--out runs/demo] [--jobs 2] [--dry-run]

1. data: ``common.synthetic --preset demo --seed 1`` at 64 px (8,000 unlabelled faces, a 1,000-face probe set,
   1,500 300W, 1,500 DISFA and 1,520 300W-LP training faces, so that 2 % is >= 30 faces);
2. SwAV pre-training of a ResNet-18 on the unlabelled faces (pretrain/configs/demo.yaml, the CPU regime that
   learns), with its representation probes against the random init (probes.png);
3. fine-tuning of landmarks (300W), AU intensity (DISFA) and 3D reconstruction (300W-LP -> AFLW2000-3D)
   on 100 / 10 / 2 % of the training data from scratch and from the SwAV backbone; 3 seeds at 2 % (the
   seed draws both the subset and the training order, the same for both inits); ``--jobs`` runs at once;
4. the table (mean ± std over the seeds) beside each task's trivial floor (the training mean shape for
   landmarks and 3D, a constant predictor, ICC 0, for AU), the figure of the gain of SwAV over scratch
   against the data fraction (gain.png), and whether "pre-training helps most at low data" (§3.4, §6)
   holds on this data: the gain at 2 % against the gain at 100 %, as measured.

Every stage skips what is finished (data manifest, backbone.pth, a run's metrics.json) and interrupted
runs resume from their last.pth, so rerunning continues. Outputs in OUT: data/, swav/, ft/<run>/,
table.md, demo.json, gain.png, probes.png, timings.json. Epochs and learning rates are fixed in advance
from the measured CPU cost of a step (about 200 steps at 100 %), never from test numbers.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.files import write_json, write_text_atomic  # noqa: E402
from common.logger import progress  # noqa: E402
from scripts.sweep_tasks import run_logged  # noqa: E402

DATA_SEED = 1            # a synthetic seed no test uses
FRACTIONS = ("1.0", "0.1", "0.02")
SEEDS = {"1.0": (0,), "0.1": (0,), "0.02": (0, 1, 2)}
INITS = ("scratch", "swav")
PRETRAIN_CONFIG = "pretrain/configs/demo.yaml"
# Epochs per fraction: ~190 steps of batch 16 at 100 %, ~95 at 10 %, ~75 at 2 % (fewer images -> more
# epochs, as the paper's 60-480 schedules do); fixed in advance from the CPU cost of a step. A 3D step costs
# ~2.3x a landmark step (the spiral decoder): its 10 % and 2 % runs take 40 % fewer epochs to fit the budget.
EPOCHS = {"1.0": 2, "0.1": 10, "0.02": 40}
EPOCHS_3D = {"1.0": 2, "0.1": 6, "0.02": 24}
TASKS = {
    "landmarks": dict(module="landmarks.train", config="landmarks/configs/synthetic.yaml", root="300W",
                      extra=["data.val_split=", "data.test_splits=[full]", "optim.batch_size=16"],
                      metric=("splits", "full", "nme_io"), lower=True, label="300W NME (%), lower is better",
                      floor="training mean shape"),
    "au_intensity": dict(module="au_intensity.train", config="au_intensity/configs/synthetic.yaml", root="DISFA",
                         extra=["optim.batch_size=16"], metric=("icc_mean",), lower=False,
                         label="DISFA ICC, higher is better", floor="constant predictor"),
    "reconstruction3d": dict(module="reconstruction3d.train", config="reconstruction3d/configs/synthetic.yaml",
                             root="", extra=["data.test_sets=[aflw2000]", "optim.batch_size=16"],
                             metric=("aflw2000", "nme68", "mean"), lower=True, epochs=EPOCHS_3D,
                             label="AFLW2000-3D NME (%), lower is better", floor="training mean shape"),
}
DATASETS = ["300w", "disfa", "300w_lp", "aflw2000_3d", "unlabelled", "probe"]


def cpu_seconds():
    """CPU seconds used by finished child processes so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_name(task, fraction, init, seed):
    return f"{task}_{fraction}_{init}_s{seed}"


def jobs(out):
    """Every fine-tuning run: (name, command)."""
    backbone = os.path.join(out, "swav", "backbone.pth")
    todo = []
    for task, spec in TASKS.items():
        for fraction in FRACTIONS:
            for seed in SEEDS[fraction]:
                for init in INITS:
                    name = run_name(task, fraction, init, seed)
                    cmd = [sys.executable, "-m", spec["module"], "--config", spec["config"],
                           f"data.root={os.path.join(out, 'data', spec['root'])}", *spec["extra"],
                           f"data.fraction={fraction}", f"optim.epochs={spec.get('epochs', EPOCHS)[fraction]}",
                           f"seed={seed}", f"data.subset_seed={seed}",
                           f"model.init={'scratch' if init == 'scratch' else backbone}",
                           f"out={os.path.join(out, 'ft', name)}"]
                    todo.append((name, cmd))
    return todo


def stage(timings, name, fn):
    t0, c0, load = time.time(), cpu_seconds(), os.getloadavg()[0]
    print(f"\n== {name} (load average {load:.2f})", flush=True)
    fn()
    timings[name] = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1),
                     "load_start": round(load, 2), "load_end": round(os.getloadavg()[0], 2)}
    print(f"== {name}: {timings[name]['wall_s']:.0f} s wall, {timings[name]['cpu_s']:.0f} s CPU", flush=True)


def make_data(out, env):
    data = os.path.join(out, "data")
    manifest = os.path.join(data, "manifest.json")
    if os.path.isfile(manifest) and json.load(open(manifest)).get("complete"):
        print(f"done: {data}")
        return
    subprocess.run([sys.executable, "-m", "common.synthetic", "--out", data, "--preset", "demo",
                    "--seed", str(DATA_SEED), "--only", *DATASETS, "--workers", str(env["DEMO_JOBS"])],
                   cwd=ROOT, env=env, check=True)


def pretrain(out, env):
    """SwAV with its probes; a collapse is reported (collapse.on_collapse=warn), not fatal, so the table shows it."""
    swav = os.path.join(out, "swav")
    if os.path.isfile(os.path.join(swav, "backbone.pth")):
        print(f"done: {swav}")
        return
    subprocess.run([sys.executable, "-m", "pretrain.train", "--config", PRETRAIN_CONFIG,
                    f"data.root={os.path.join(out, 'data', 'unlabelled', 'images')}",
                    f"probe.root={os.path.join(out, 'data', 'probe')}", "collapse.on_collapse=warn", f"out={swav}"],
                   cwd=ROOT, env=dict(env, OMP_NUM_THREADS=env.get("DEMO_THREADS", env["DEMO_JOBS"])), check=True)
    shutil.copyfile(os.path.join(swav, "probes.png"), os.path.join(out, "probes.png"))


def finetune(out, env, n_jobs):
    todo = [(n, c) for n, c in jobs(out) if not os.path.isfile(os.path.join(out, "ft", n, "metrics.json"))]
    print(f"{len(jobs(out)) - len(todo)} runs done, {len(todo)} to go, {n_jobs} at a time "
          f"(logs: {out}/ft/<run>/stdout.log)")
    child = dict(env, OMP_NUM_THREADS="1", FACEREP_PROGRESS="0")
    with ThreadPoolExecutor(n_jobs) as pool:
        futures = [pool.submit(run_logged, c, os.path.join(out, "ft", n, "stdout.log"), child, ROOT) for n, c in todo]
        for future in progress(as_completed(futures), desc="fine-tuning", total=len(futures)):
            future.result()                                              # a failed run: SystemExit with its log's tail


def metric(out, task, name):
    path = os.path.join(out, "ft", name, "metrics.json")
    if not os.path.isfile(path):
        return None
    value = json.load(open(path))
    for key in TASKS[task]["metric"]:
        value = value[key]
    return float(value)


def floors(out, env):
    """Each task's trivial floor on its test split: {task: value}, cached in OUT/floors.json."""
    path = os.path.join(out, "floors.json")
    if os.path.isfile(path):
        return json.load(open(path))
    from landmarks import formats, scores
    root = os.path.join(out, "data", "300W")
    values = {"landmarks": scores.mean_shape_nme("300w", formats.load_split("300w", root, "train"),
                                                 formats.load_split("300w", root, "full"), input_size=64),
              "au_intensity": 0.0}                                        # ICC of a constant predictor
    run = os.path.join(out, "ft", run_name("reconstruction3d", "1.0", "scratch", 0))
    subprocess.run([sys.executable, "-m", "reconstruction3d.eval", "--config", TASKS["reconstruction3d"]["config"],
                    f"data.root={os.path.join(out, 'data')}", "--checkpoint", os.path.join(run, "last.pth"),
                    "--mean-shape-baseline"], cwd=ROOT, env=env, check=True, capture_output=True)
    values["reconstruction3d"] = json.load(open(os.path.join(run, "metrics.json")))["aflw2000_mean_shape"]["nme68"][
        "mean"]
    write_json(path, values)
    return values


def report(out, floor=None):
    """The markdown table, the per-task claim check and the numbers (``floor``: {task: trivial floor})."""
    floor = floor or {}
    lines = ["| Task (metric) | Data | Scratch | SwAV | Gain of SwAV | Trivial floor |", "|---|---|---|---|---|---|"]
    summary, verdicts = {}, []
    for task, spec in TASKS.items():
        summary[task], sign = {"floor": floor.get(task), "floor_is": spec["floor"]}, (-1.0 if spec["lower"] else 1.0)
        for fraction in FRACTIONS:
            vals = {i: np.array([metric(out, task, run_name(task, fraction, i, s)) for s in SEEDS[fraction]],
                                dtype=float) for i in INITS}
            gain = sign * (vals["swav"] - vals["scratch"])          # paired by seed; > 0: pre-training helps
            summary[task][fraction] = {i: v.tolist() for i, v in vals.items()} | {"gain": gain.tolist()}
            cells = [fmt(vals[i]) for i in INITS] + [fmt(gain)]
            label = f"{float(fraction):.0%}" + (f" ({len(SEEDS[fraction])} seeds)" if len(SEEDS[fraction]) > 1 else "")
            floor_cell = "–" if floor.get(task) is None else f"{floor[task]:.3f} ({spec['floor']})"
            lines.append(f"| {task} ({spec['label']}) | {label} | " + " | ".join(cells) + f" | {floor_cell} |")
        verdicts.append(verdict(task, summary[task]))
        if floor.get(task) is not None:
            verdicts.append(floor_check(task, summary[task], floor[task]))
    return "\n".join(lines), verdicts, summary


def fmt(values):
    if np.isnan(values).any():
        return "–"
    return f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else "")


def verdict(task, numbers):
    low, full = np.array(numbers["0.02"]["gain"]), np.array(numbers["1.0"]["gain"])
    if np.isnan(low).any() or np.isnan(full).any():
        return f"{task}: runs missing"
    spread = low.std(ddof=1)
    holds = low.mean() > 0 and low.mean() > full.mean()
    clear = low.mean() - full.mean() > spread
    return (f"{task}: gain of SwAV over scratch {low.mean():+.3f} ± {spread:.3f} at 2 % vs {full.mean():+.3f} at "
            f"100 % -> the paper's claim {'holds' if holds else 'does NOT hold'} here"
            + ("" if not holds else " (beyond the seed spread)" if clear else " (within the seed spread)"))


def floor_check(task, numbers, floor):
    """Whether both 100 % runs beat the task's trivial floor."""
    lower = TASKS[task]["lower"]
    runs = {i: numbers["1.0"][i][0] for i in INITS}
    beats = {i: (v < floor if lower else v > floor) for i, v in runs.items()}
    said = ", ".join(f"{i} {v:.3f} {'beats' if beats[i] else 'does NOT beat'}" for i, v in runs.items())
    return f"{task} at 100 %: {said} the {TASKS[task]['floor']} ({floor:.3f})"


def pretraining_summary(out):
    """The SwAV run's metrics.json: collapsed or not, and each probe at step 0 (random init) and at the end."""
    path = os.path.join(out, "swav", "metrics.json")
    if not os.path.isfile(path):
        return {}
    metrics = json.load(open(path))
    probes = metrics.get("probes", {})
    return {"collapsed": metrics["collapsed"], "step0": probes.get("step0"), "final": probes.get("final"),
            "floors": probes.get("floors"), "probe_fraction": metrics.get("probe_fraction")}


def swav_health(pretraining):
    """One line per probe on the pre-training: random init (step 0) -> end, and whether it improved."""
    if not pretraining:
        return ["SwAV: no metrics.json"]
    from pretrain.probes import LOWER_IS_BETTER
    lines = [f"SwAV pre-training: {'COLLAPSED' if pretraining['collapsed'] else 'not collapsed'}"]
    for name, lower in LOWER_IS_BETTER.items():
        if name in (pretraining["final"] or {}):
            a, b = pretraining["step0"][name], pretraining["final"][name]
            better = b < a if lower else b > a
            lines.append(f"probe {name}: random init {a:.4g} -> SwAV {b:.4g} "
                         f"({'better' if better else 'NOT better'}; floor {pretraining['floors'][name]:.4g})")
    return lines


def plot_gain(summary, path):
    """gain.png: the gain of SwAV over scratch against the data fraction, one panel per task (error bars:
    std over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.2))
    for ax, (task, spec) in zip(axes, TASKS.items()):
        x = [100 * float(f) for f in FRACTIONS]
        gains = [np.array(summary[task][f]["gain"], dtype=float) for f in FRACTIONS]
        ax.errorbar(x, [g.mean() for g in gains], yerr=[g.std(ddof=1) if len(g) > 1 else 0 for g in gains],
                    marker="o", capsize=4)
        ax.axhline(0, color="grey", ls="--")
        ax.set(xscale="log", xlabel="labelled data (%)", title=f"{task}", ylabel="gain of SwAV over scratch")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.text(0.02, 0.02, "> 0: SwAV better", transform=ax.transAxes, fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "demo"))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("DEMO_JOBS", 2)),
                        help="fine-tuning runs at once (default: DEMO_JOBS or 2, one per core)")
    parser.add_argument("--dry-run", action="store_true", help="print the fine-tuning commands and stop")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    if args.dry_run:
        for _, cmd in jobs(out):
            print(" ".join(cmd))
        return None
    env = dict(os.environ, DEMO_JOBS=str(args.jobs))
    timings, t0 = {}, time.time()
    stage(timings, "1/4 synthetic data", lambda: make_data(out, env))
    stage(timings, "2/4 SwAV pre-training", lambda: pretrain(out, env))
    stage(timings, "3/4 fine-tuning", lambda: finetune(out, env, args.jobs))
    table, verdicts, summary = report(out, floors(out, env))
    pretraining = pretraining_summary(out)
    timings["total_wall_s"] = round(time.time() - t0, 1)
    plot_gain(summary, os.path.join(out, "gain.png"))
    text = ("# make demo: synthetic benchmark, ResNet-18, scratch vs SwAV\n\n" + table + "\n\n"
            + "\n".join(f"- {v}" for v in [*swav_health(pretraining), *verdicts]) + "\n")
    write_text_atomic(os.path.join(out, "table.md"), text)
    write_json(os.path.join(out, "demo.json"), {"pretraining": pretraining, "finetune": summary, "verdicts": verdicts,
                                                "total_wall_s": timings["total_wall_s"]})
    write_json(os.path.join(out, "timings.json"), timings)
    print("\n== 4/4 results (cells: mean ± std over seeds; gain > 0 means SwAV is better)\n\n" + text)
    print(f"figures: {out}/gain.png, {out}/probes.png")
    print(f"total {timings['total_wall_s'] / 60:.1f} min wall; stages in {out}/timings.json")
    return summary


if __name__ == "__main__":
    main()
