"""Fig. 2 of the paper: validation error per hyper-parameter combination on a radar plot, one curve per init.

"The labels on the figure's perimeter show the scheduler length (first value) and backbone
relative's learning rate (second value) separated by an underscore. Each circle on the radar plot
denotes a constant error level" (Fig. 2 caption). The paper fixes one learning rate per plot; with
several in the grid we draw one radar per learning rate.
"""
import numpy as np

LR_KEY = "optim.lr"


def radar_series(summary):
    """{lr value or None: (perimeter labels, {init name: values in label order})} from a sweep summary."""
    out = {}
    for name, init in summary["inits"].items():
        for run in init["runs"]:
            combo = dict(run["combo"])
            lr = combo.pop(LR_KEY, None)
            label = "_".join(str(v) for v in combo.values()) or "-"
            labels, curves = out.setdefault(lr, ([], {}))
            if label not in labels:
                labels.append(label)
            curves.setdefault(name, {})[label] = run["val"]
    return {lr: (labels, {n: [c.get(lab, np.nan) for lab in labels] for n, c in curves.items()})
            for lr, (labels, curves) in out.items()}


def draw_polygons(ax, labels, curves, fill=0.0):
    """On a polar ``ax``: one closed polygon per {name: values (one per label)}, the labels around the circle
    (also scripts/evaluate_report.py's radar); ``fill`` > 0 shades each polygon with that alpha."""
    angles = np.linspace(0, 2 * np.pi, len(labels), endpoint=False)
    closed = np.append(angles, angles[:1])
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        ax.plot(closed, np.append(values, values[:1]), marker="o", ms=3, lw=1.5, label=name)
        if fill:
            ax.fill(closed, np.append(values, values[:1]), alpha=fill)
    ax.set_xticks(angles)
    ax.set_xticklabels(labels, fontsize=7)


def radar(path, summary, *, metric, lower):
    """Write the radar plot(s) of ``summary`` (scripts/sweep.py's sweep.json) to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = radar_series(summary)
    fig, axes = plt.subplots(1, len(series), figsize=(5.2 * len(series), 5.2), subplot_kw={"projection": "polar"},
                             squeeze=False)
    names = [k.split(".")[-1] for k in summary["grid"] if k != LR_KEY]
    for ax, (lr, (labels, curves)) in zip(axes[0], sorted(series.items(), key=lambda kv: str(kv[0]))):
        draw_polygons(ax, labels, curves)
        ax.set_title(f"lr {lr}" if lr is not None else "", fontsize=9)
    axes[0][0].legend(loc="upper right", bbox_to_anchor=(1.25, 1.12), fontsize=8)
    direction = "closer to the centre is better" if lower else "higher is better (farther out)"
    fig.suptitle(f"{summary['task']}: validation {metric} per {'_'.join(names) or 'combination'}\n({direction})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
