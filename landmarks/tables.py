"""Collect landmark runs into the layout of paper Tables 5 and 6, with the paper's numbers beside ours.

    python -m landmarks.tables --table 6 --runs runs/landmarks [--out runs/landmarks/table6.md]

Reads RUNS/<dataset>_<fraction>_<method>/metrics.json as written by landmarks.train / landmarks.eval
(run names as scripts/table5.sh and scripts/table6.sh make them). A cell is "ours (paper)"; a run
that is missing shows "-". Paper numbers are copied from the paper text (Tables 5-6).
"""
import argparse
import json
import os

METHODS = {"scratch": "Scratch", "imagenet": "Sup. (ImageNet)", "sup_vggf": "Sup. (VGG-F)",
           "ours_flickrf": "Ours (Flickr-F)", "ours_vggf": "Ours (VGG-F)"}
# Table column -> (run dataset, metrics split, metric key): Table 6 reports 300W on its test set
# (the private 600, compared with HRNet's 3.85), COFW-68 with the 300W models, WFLW test and AFLW full.
COLUMNS = {"300W": ("300w", "private", "nme_io"), "COFW": ("cofw68", "test", "nme_io"),
           "WFLW": ("wflw", "test", "nme_io"), "AFLW": ("aflw19", "full", "nme_diag")}

# Paper Table 6 (NME %, inter-ocular; AFLW NME_diag): {fraction: {method: (300W, COFW, WFLW, AFLW)}}.
TABLE6 = {
    "1.0": {"scratch": (4.50, 4.10, 5.10, 1.59), "imagenet": (4.16, 3.63, 4.80, 1.59),
            "sup_vggf": (3.97, 3.51, 4.70, 1.58), "ours_flickrf": (3.86, 3.45, 4.65, 1.57),
            "ours_vggf": (3.85, 3.32, 4.57, 1.55)},
    "0.1": {"scratch": (6.61, 5.63, 6.82, 1.84), "imagenet": (5.15, 5.32, 6.56, 1.81),
            "sup_vggf": (4.55, 4.46, 5.87, 1.77), "ours_flickrf": (4.31, 4.27, 5.45, 1.73),
            "ours_vggf": (4.25, 3.95, 5.44, 1.74)},
    "0.02": {"scratch": (13.52, 14.7, 10.43, 2.23), "imagenet": (8.04, 8.05, 8.99, 2.09),
             "sup_vggf": (5.45, 5.55, 6.94, 2.00), "ours_flickrf": (5.05, 5.18, 6.53, 1.86),
             "ours_vggf": (4.97, 4.70, 6.29, 1.88)},
}
TABLE6_SOTA = {"SOTA (from paper) [76]": (3.85, 3.45, 4.60, 1.57), "SOTA (from paper) [36]": (None, None, 4.37, 1.39)}

# Paper Table 5: per dataset, its three fractions and rows (method, values); only "Ours (VGG-F)" is ours.
TABLE5 = {
    "300W": (("1.0", "0.1", "0.015"), ("300w", "full", "nme_io"),
             (("RCN+ [29]", (3.46, 4.47, None)), ("TS3 [19]", (3.49, 5.03, None)),
              ("3FabRec [2]", (3.82, 4.47, 5.10)), ("ours_vggf", (3.20, 3.48, 4.13)))),
    "AFLW": (("1.0", "0.1", "0.01"), ("aflw19", "full", "nme_diag"),
             (("RCN+ [29]", (1.61, None, 2.88)), ("TS3 [19]", (None, 2.14, None)),
              ("3FabRec [2]", (1.87, 2.03, 2.38)), ("ours_vggf", (1.54, 1.70, 1.91)))),
    "WFLW": (("1.0", "0.1", "0.007"), ("wflw", "test", "nme_io"),
             (("SA [54]", (4.39, 7.20, None)), ("3FabRec [2]", (5.62, 6.73, 8.39)),
              ("ours_vggf", (4.57, 5.44, 7.11)))),
}


def _paper(value):
    return "-" if value is None else f"{value:.2f}"


def run_value(runs, dataset, fraction, method, split, key):
    """Our number for one cell, or None when the run (or that split) is missing."""
    path = os.path.join(runs, f"{dataset}_{fraction}_{method}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("splits", {}).get(split, {}).get(key)


def _cell(ours, paper):
    return f"{'-' if ours is None else f'{ours:.2f}'} ({_paper(paper)})"


def table6(runs):
    lines = ["Table 6: NME (%) ours (paper); inter-ocular, AFLW NME_diag", "",
             "| Data amount | Pretrain. method | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for fraction, rows in TABLE6.items():
        for method, paper in rows.items():
            cells = [_cell(run_value(runs, ds, fraction, method, split, key), p)
                     for (ds, split, key), p in zip(COLUMNS.values(), paper)]
            lines.append(f"| {float(fraction):.0%} | {METHODS[method]} | " + " | ".join(cells) + " |")
    for name, paper in TABLE6_SOTA.items():
        lines.append(f"| | {name} | " + " | ".join(_paper(p) for p in paper) + " |")
    return "\n".join(lines)


def table5(runs):
    lines = ["Table 5: few-shot NME (%) ours (paper)", ""]
    for name, (fractions, (ds, split, key), rows) in TABLE5.items():
        lines += [f"| {name} | " + " | ".join(f"{float(f):.1%}".replace(".0%", "%") for f in fractions) + " |",
                  "|---|" + "---|" * len(fractions)]
        for method, paper in rows:
            if method in METHODS:
                cells = [_cell(run_value(runs, ds, f, method, split, key), p) for f, p in zip(fractions, paper)]
                lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
            else:
                lines.append(f"| {method} | " + " | ".join(_paper(p) for p in paper) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m landmarks.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, choices=(5, 6), required=True)
    parser.add_argument("--runs", default="runs/landmarks", help="folder of the runs")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    text = (table5 if args.table == 5 else table6)(args.runs)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
