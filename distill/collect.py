"""Collects self-distillation runs (``RUNS/*/metrics.json``) into paper Figs. 3 and 4: a PNG and a table.

    python -m distill.collect --figure 3 --runs runs/distill/fig3 [--split full] [--out DIR]
    python -m distill.collect --figure 4 --runs runs/distill/fig4 [--split full] [--out DIR]

Fig. 3 left: NME after step ``--left-step`` (default 1) against the amount of unlabelled data,
n_unlabelled / |training set| in % ("100% corresponds to 300W"), with the teacher at 0 %.
Fig. 3 right: NME after each step (step 0 = the teacher) of every run with more than one step.
Fig. 4: per student initialisation (the run's ``label``) and labelled fraction, the NME of the
fine-tuned teacher and of the final student. NME is the dataset's primary metric on ``--split``
(300W: inter-ocular, %). Writes OUT/fig<N>.png and OUT/fig<N>.md and prints the table.
"""
import argparse
import glob
import json
import math
import os


def load_runs(root):
    """Every distill.train ``metrics.json`` under ``root`` (one folder level), with its run name."""
    runs = []
    for path in sorted(glob.glob(os.path.join(glob.escape(root), "*", "metrics.json"))):
        with open(path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not JSON ({e})") from None
        if record.get("kind") == "distill":
            runs.append({**record, "run": os.path.basename(os.path.dirname(path))})
    return runs


def nme(splits, split, primary):
    """The primary NME of ``split`` (NaN when the split was not scored)."""
    return float(splits.get(split, {}).get(primary, math.nan))


def fig3_rows(runs, *, split, left_step=1):
    """(left rows: amount %, n_unlabelled, teacher, student, run), (right rows: run, step, NME)."""
    left, right = [], []
    for r in runs:
        teacher = nme(r["teacher"]["splits"], split, r["primary"])
        if left_step <= len(r["steps"]):
            student = nme(r["steps"][left_step - 1]["splits"], split, r["primary"])
            share = 100.0 * r["n_unlabelled"] / r["reference_size"]
            left.append((share, r["n_unlabelled"], teacher, student, r["run"]))
        if r["steps_total"] > 1:
            right.append((r["run"], 0, teacher))
            right += [(r["run"], s["step"], nme(s["splits"], split, r["primary"])) for s in r["steps"]]
    return sorted(left), right


def fig4_rows(runs, *, split):
    """Rows (label, fraction, teacher NME, final student NME, run), by label then falling fraction."""
    rows = [(r["label"] or os.path.basename(str(r["init"])), r["fraction"],
             nme(r["teacher"]["splits"], split, r["primary"]), nme(r["splits"], split, r["primary"]), r["run"])
            for r in runs]
    return sorted(rows, key=lambda row: (row[0], -row[1]))


def fig3_markdown(left, right, *, split, left_step):
    lines = [f"Fig. 3 left: NME (%) on {split} after step {left_step} vs unlabelled data", "",
             "| unlabelled (% of train set) | images | teacher | student | run |", "|---|---|---|---|---|"]
    lines += [f"| {a:.0f} | {n} | {t:.2f} | {s:.2f} | {run} |" for a, n, t, s, run in left]
    lines += ["", f"Fig. 3 right: NME (%) on {split} vs self-distillation step (0 = teacher)", "",
              "| run | step | NME |", "|---|---|---|"]
    lines += [f"| {run} | {step} | {v:.2f} |" for run, step, v in right]
    return "\n".join(lines) + "\n"


def fig4_markdown(rows, *, split):
    fractions = sorted({r[1] for r in rows}, reverse=True)
    labels = list(dict.fromkeys(r[0] for r in rows))
    cell = {(r[0], r[1]): f"{r[2]:.2f} → {r[3]:.2f}" for r in rows}
    lines = [f"Fig. 4: NME (%) on {split}, fine-tuned teacher → self-distilled student", "",
             "| student init | " + " | ".join(f"{100 * f:g}% labels" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    lines += [f"| {label} | " + " | ".join(cell.get((label, f), "-") for f in fractions) + " |" for label in labels]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fig3(left, right, path, *, split, left_step):
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    if left:
        xs = [0.0] + [row[0] for row in left]
        ys = [sum(row[2] for row in left) / len(left)] + [row[3] for row in left]
        a.plot(xs, ys, "o-", lw=2)
    a.set(xlabel="unlabelled data (% of the training set)", ylabel=f"NME (%), {split}",
          title=f"after step {left_step} (0 % = teacher)")
    for run in dict.fromkeys(row[0] for row in right):
        pts = [(s, v) for r, s, v in right if r == run]
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", lw=2, label=run)
    b.set(xlabel="self-distillation step (0 = teacher)", ylabel=f"NME (%), {split}", title="steps")
    if right:
        b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_fig4(rows, path, *, split):
    """Grouped bars per labelled fraction: for each init, its teacher (light, hatched) then its student."""
    plt = _pyplot()
    fractions = sorted({r[1] for r in rows}, reverse=True)
    labels = list(dict.fromkeys(r[0] for r in rows))
    width = 0.8 / max(2 * len(labels), 1)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    for k, label in enumerate(labels):
        vals = {r[1]: r for r in rows if r[0] == label}
        colour = f"C{k}"
        for j, (name, column, style) in enumerate((("teacher", 2, dict(alpha=0.35, hatch="//")),
                                                    ("distilled", 3, {}))):
            xs = [i + (2 * k + j - len(labels) + 0.5) * width for i in range(len(fractions))]
            ys = [vals[f][column] if f in vals else math.nan for f in fractions]
            ax.bar(xs, ys, width * 0.95, color=colour, edgecolor=colour, label=f"{label}: {name}", **style)
    ax.set_xticks(range(len(fractions)), [f"{100 * f:g}%" for f in fractions])
    ax.set(xlabel="labelled data (300W)", ylabel=f"NME (%), {split}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distill.collect", description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=int, choices=(3, 4), required=True)
    parser.add_argument("--runs", required=True, help="folder whose sub-folders are distill.train runs")
    parser.add_argument("--split", default="full", help="test split to report (300W: full = 689 images)")
    parser.add_argument("--left-step", type=int, default=1, help="Fig. 3 left: the step whose student is plotted")
    parser.add_argument("--out", help="output folder (default: --runs)")
    args = parser.parse_args(argv)
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"distill.collect: no distill.train metrics.json under {args.runs}/*/")
    out = args.out or args.runs
    os.makedirs(out, exist_ok=True)
    if args.figure == 3:
        left, right = fig3_rows(runs, split=args.split, left_step=args.left_step)
        text = fig3_markdown(left, right, split=args.split, left_step=args.left_step)
        plot_fig3(left, right, os.path.join(out, "fig3.png"), split=args.split, left_step=args.left_step)
    else:
        rows = fig4_rows(runs, split=args.split)
        text = fig4_markdown(rows, split=args.split)
        plot_fig4(rows, os.path.join(out, "fig4.png"), split=args.split)
    with open(os.path.join(out, f"fig{args.figure}.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
