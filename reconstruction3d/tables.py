"""Collect 3D reconstruction runs into the layout of paper Table 9, with the paper's numbers beside ours.

    python -m reconstruction3d.tables --runs runs/r3d [--out runs/r3d/table9.md]

Reads RUNS/300wlp_<fraction>_<method>/metrics.json (as scripts/table9.sh names the runs) and
takes ``aflw2000.nme68.mean``: AFLW2000-3D NME (68 points, %), the mean of the three yaw-bin means.
A cell is "ours (paper)"; a missing run shows "-". Paper numbers are copied from the paper text.
"""
import argparse
import json
import os

METHODS = {"scratch": "Scratch", "imagenet": "Sup. (Imagenet)", "sup_vggf": "Sup. (VGG-F)",
           "ours_flickrf": "Ours (Flickr-F)", "ours_vggf": "Ours (VGG-F)"}
FRACTIONS = {"1.0": "100%", "0.1": "10%", "0.02": "2%"}
# Paper Table 9: "3D face reconstruction in terms of NME (68 points) on AFLW2000-3D".
TABLE9 = {
    "1.0": {"scratch": 3.70, "imagenet": 3.58, "sup_vggf": 3.51, "ours_flickrf": 3.53, "ours_vggf": 3.42},
    "0.1": {"scratch": 4.72, "imagenet": 4.06, "sup_vggf": 3.82, "ours_flickrf": 3.81, "ours_vggf": 3.72},
    "0.02": {"scratch": 7.11, "imagenet": 6.15, "sup_vggf": 4.42, "ours_flickrf": 4.50, "ours_vggf": 4.31},
}
SOTA = ("SOTA (from paper) [15]", 3.39)


def run_value(runs, fraction, method):
    """Our AFLW2000-3D NME (%) for one cell, or None when the run is missing."""
    path = os.path.join(runs, f"300wlp_{fraction}_{method}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("aflw2000", {}).get("nme68", {}).get("mean")


def table9(runs):
    """Markdown of Table 9: one row per data regime, "ours (paper)" per pre-training method."""
    lines = ["| Data | " + " | ".join(METHODS.values()) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for fraction, label in FRACTIONS.items():
        cells = []
        for method in METHODS:
            ours = run_value(runs, fraction, method)
            cells.append(f"{'-' if ours is None else f'{ours:.2f}'} ({TABLE9[fraction][method]:.2f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(f"\n{SOTA[0]}: {SOTA[1]:.2f}. Cells: ours (paper), AFLW2000-3D NME (68 points) in %.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reconstruction3d.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/r3d", help="folder holding the 300wlp_<fraction>_<method> runs")
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    text = table9(args.runs)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
