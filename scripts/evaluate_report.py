"""Report of the backbone evaluation harness (issue 20): OUT/report.md (one row per backbone evaluated in OUT,
plus the paper's rows where a cell matches) and OUT/radar.png (one axis per task x dataset at fraction 1.0,
one polygon per backbone).

Paper rows: ``scripts/paper_numbers.yaml`` Table 2 (fine-tuned after SwAV pre-training: 300W NME, DISFA ICC,
IJB-B TAR@1e-4; the paper's DISFA ICC pools 3 folds, ours is fold 0), au_intensity/tables.py Table 7
(the paper's linear protocol on DISFA / BP4D: a linear layer trained by SGD on frozen features), and one row
per pre-training of Tables 6 (300W test NME), 9 (AFLW2000-3D NME68) and 12 (AffectNet accuracy, valence and
arousal CCC), all fine-tuned (landmarks/tables.py, reconstruction3d/tables.py, emotion/tables.py).
"""
import glob
import json
import os

import numpy as np
import yaml

from common.files import write_text_atomic
from common.metrics import LOWER_IS_BETTER, lower_is_better
from scripts.evaluate_linear import primary
from scripts.sweep_plot import draw_polygons

PAPER_FRACTIONS = {"100%": "1.0", "10%": "0.1", "2%": "0.02", "1%": "0.01"}


def load_results(out):
    """{row name: results dict} of OUT/results/*.json in name order: NAME.json (linear) is row "NAME",
    NAME.finetune.json row "NAME (finetune)"."""
    results = {}
    for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
        name = os.path.basename(path)[:-len(".json")]
        with open(path) as f:
            results[name[:-len(".finetune")] + " (finetune)" if name.endswith(".finetune") else name] = json.load(f)
    return results


def paper_rows(here=os.path.dirname(os.path.abspath(__file__))):
    """{row label: {cell id "task/dataset/fraction/metric": value}} of the paper's numbers that match our cells."""
    with open(os.path.join(here, "paper_numbers.yaml")) as f:
        table2 = yaml.safe_load(f)["table2"]
    rows = {}
    cells = ("landmarks/300w/{}/nme_io", "au/disfa/{}/icc_mean", "recognition/ijbb/{}/tar@1e-4")
    for fraction, by_data in table2["rows"].items():
        for data, values in by_data.items():
            row = rows.setdefault(f"paper (fine-tune, Table 2): SwAV on {data}", {})
            for cell, value in zip(cells, values):
                row[cell.format(PAPER_FRACTIONS[fraction])] = value
    from au_intensity.tables import PAPER_T7
    from emotion.tables import PAPER_T12
    from landmarks.tables import METHODS, TABLE6
    from reconstruction3d.tables import TABLE9
    for fraction, by_method in TABLE6.items():
        for method, values in by_method.items():
            rows.setdefault(f"paper (fine-tune, Tables 6/9/12): {METHODS[method]}", {})[
                f"landmarks/300w/{fraction}/nme_io"] = values[0]
    for fraction, by_method in TABLE9.items():
        for method, value in by_method.items():
            rows[f"paper (fine-tune, Tables 6/9/12): {METHODS[method]}"][f"3d/aflw2000/{fraction}/nme68"] = value
    t12_method = {"random": "scratch", "imagenet": "imagenet", "vggface": "sup_vggf", "ours": "ours_vggf"}
    for fraction, by_init in PAPER_T12.items():
        for init, values in by_init.items():
            row = rows[f"paper (fine-tune, Tables 6/9/12): {METHODS[t12_method[init]]}"]
            for metric, value in (("accuracy", values[0]), ("valence_ccc", values[4]), ("arousal_ccc", values[8])):
                if value is not None:
                    row[f"emotion/affectnet/{PAPER_FRACTIONS[fraction]}/{metric}"] = value
    for fraction, by_init in PAPER_T7.items():
        for init, values in by_init.items():
            row = rows.setdefault(f"paper (linear, Table 7): {init}", {})
            for cell, value in (("au/disfa/{}/icc_mean", values[1]), ("au/bp4d/{}/icc_mean", values[3])):
                if value is not None:
                    row[cell.format(PAPER_FRACTIONS[fraction])] = value
    return rows


def _columns(results):
    """Sorted cell ids "task/dataset/fraction/metric" present in any result."""
    cols = set()
    for r in results.values():
        for cell_id, cell in r.get("cells", {}).items():
            cols.update(f"{cell_id}/{m}" for m in cell["metrics"]
                        if m not in ("alpha", "n_test", "test_split", "auc", "yaw_source", "chosen"))
    return sorted(cols, key=lambda c: (c.split("/")[:2], -float(c.split("/")[2]), c))


def _fmt(v):
    return "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def write_report(out):
    """OUT/report.md and OUT/radar.png from every OUT/results/*.json; returns the report's path."""
    results = load_results(out)
    cols = _columns(results)
    lines = ["# Backbone evaluation (issue 20)", "",
             "Cells: task/dataset/training fraction/metric. Rows NAME: the linear protocol, closed-form ridge on "
             "cached frozen features (scripts/evaluate_linear.py); landmarks and 3D = ridge on spatial features "
             "to the points (not the paper's heatmap / mesh-decoder heads); recognition = pooled features as the "
             "embedding, no training. Rows NAME (finetune): the task trainers, each cell searched on its own "
             "training data when SEARCH=1 (scripts/evaluate_finetune.py). Paper rows are labelled with their "
             "protocol. One table per task.", ""]
    floors = {}
    for r in results.values():
        for cell_id, cell in r.get("cells", {}).items():
            for m, v in cell.get("floor", {}).items():
                floors.setdefault(f"{cell_id}/{m}", v)
    papers = paper_rows()
    for task in dict.fromkeys(c.split("/")[0] for c in cols):
        task_cols = [c for c in cols if c.split("/")[0] == task]
        lines += [f"## {task}", "", "| backbone | " + " | ".join(c.split("/", 1)[1] for c in task_cols) + " |",
                  "|---" * (len(task_cols) + 1) + "|"]
        for name, r in results.items():
            cells = r.get("cells", {})
            values = [cells.get(c.rsplit("/", 1)[0], {}).get("metrics", {}).get(c.rsplit("/", 1)[1])
                      for c in task_cols]
            if any(v is not None for v in values):
                lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |")
        lines.append("| floor (image ignored) | " + " | ".join(_fmt(floors.get(c)) for c in task_cols) + " |")
        for label, row in papers.items():
            if any(c in row for c in task_cols):
                lines.append(f"| {label} | " + " | ".join(_fmt(row.get(c)) for c in task_cols) + " |")
        lines.append("")
    skipped = {k: v for r in results.values() for k, v in r.get("skipped", {}).items()}
    if skipped:
        lines += ["", "Skipped:"] + [f"- {k}: {v}" for k, v in sorted(skipped.items())]
    lines += ["", "![radar](radar.png)", ""]
    path = os.path.join(out, "report.md")
    write_text_atomic(path, "\n".join(lines))
    plot_radar(results, os.path.join(out, "radar.png"))
    return path


def plot_radar(results, path):
    """radar.png: one axis per task x dataset (primary metric, fraction 1.0), values min-max normalised per
    axis over the backbones and floors, lower-is-better metrics inverted; one polygon per backbone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes = sorted({cid for r in results.values() for cid in r.get("cells", {}) if cid.endswith("/1.0")})
    fig = plt.figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot(polar=True)
    if axes:
        metric = [primary(a) for a in axes]
        table = np.array([[r.get("cells", {}).get(a, {}).get("metrics", {}).get(m, np.nan)
                           for a, m in zip(axes, metric)]
                          for r in results.values()], dtype=float)
        floor = np.array([next((r["cells"][a].get("floor", {}).get(m) for r in results.values()
                                if a in r.get("cells", {})), np.nan) for a, m in zip(axes, metric)], dtype=float)
        every = np.vstack([table, floor[None]])
        lo, hi = np.nanmin(every, 0), np.nanmax(every, 0)
        norm = (table - lo) / np.where(hi > lo, hi - lo, 1.0)
        flip = np.array([m in LOWER_IS_BETTER and lower_is_better(m) for m in metric], dtype=bool)
        norm[:, flip] = 1 - norm[:, flip]
        labels = [f"{a.rsplit('/', 1)[0]}\n{m}{' (inv.)' if f else ''}" for a, m, f in zip(axes, metric, flip)]
        draw_polygons(ax, labels, dict(zip(results, np.nan_to_num(norm))), fill=0.1)
        ax.set_ylim(0, 1)
        ax.set_yticklabels([])
        ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.25, 1.12))
    ax.set_title("fraction 1.0, per-axis min-max (floor..best)", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
