"""Paper App. D.2 Fig. 6: cumulative 3D reconstruction error curves on Florence, one panel per data regime.

    python -m reconstruction3d.fig6 --out runs/r3d/fig6.png \
        --curve "100%:Scratch=runs/r3d/300wlp_1.0_scratch/metrics.json" --curve "10%:..." ...

Each ``--curve`` is ``REGIME:LABEL=METRICS_JSON``; the file's ``florence`` entry (written by
``python -m reconstruction3d.eval --dataset florence``) holds the per-image errors. Panels appear in
the order their regime is first named: (a) 100 %, (b) 10 %, (c) 2 % in scripts/fig6.sh. The paper
gives the figure only as curves (no numbers in the text); the mean NME of each curve is printed as
JSON on the last line.
"""
import argparse
import json

import numpy as np

from reconstruction3d.engine import draw_ced


def parse_curve(text):
    """``REGIME:LABEL=PATH`` -> (regime, label, path)."""
    head, sep, path = text.partition("=")
    regime, colon, label = head.partition(":")
    if not (sep and colon and regime and label and path):
        raise ValueError(f"--curve {text!r}: expected REGIME:LABEL=METRICS_JSON")
    return regime, label, path


def load_errors(path):
    with open(path) as f:
        entry = json.load(f).get("florence")
    if not entry or "errors" not in entry:
        raise ValueError(f"{path}: no 'florence' errors; run reconstruction3d.eval --dataset florence first")
    return np.asarray(entry["errors"], dtype=np.float64), entry.get("normaliser", "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reconstruction3d.fig6", description=__doc__.splitlines()[0])
    parser.add_argument("--curve", action="append", required=True, help="REGIME:LABEL=METRICS_JSON (repeatable)")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--max-error", type=float, default=0.1, help="x range of the curves (NME, fraction)")
    args = parser.parse_args(argv)
    panels, summary, norms = {}, {}, set()
    for regime, label, path in map(parse_curve, args.curve):
        errors, norm = load_errors(path)
        panels.setdefault(regime, {})[label] = errors
        summary.setdefault(regime, {})[label] = 100 * float(errors.mean())
        norms.add(norm)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), dpi=120, squeeze=False)
    for k, (ax, (regime, curves)) in enumerate(zip(axes[0], panels.items())):
        draw_ced(ax, curves, title=f"({chr(ord('a') + k)}) {regime}", max_error=args.max_error)
    fig.suptitle(f"Florence, {'/'.join(sorted(norms))}-normalised error after alignment")
    fig.tight_layout()
    fig.savefig(args.out)
    plt.close(fig)
    print(json.dumps({"figure": args.out, "mean_nme": summary}, sort_keys=True))


if __name__ == "__main__":
    main()
