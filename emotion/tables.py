"""Table 12 of the paper (App. D.1, AffectNet) from our runs, with the paper's numbers beside ours.

    python -m emotion.tables [--runs runs/emotion]

Reads ``RUNS/affectnet_<init>_<fraction>/metrics.json`` as scripts/table12.sh lays them out, prints a
markdown table "ours (paper)" and writes it to RUNS/table12.md. The stored paper text ends before the
2 % "ours" row, so that row has no paper numbers.
"""
import argparse
import json
import os

# Row name in the paper -> the <init> part of our run names ("ours" = Ours (VGG-F), SwAV on VGGFace2).
INITS = {"random": "scratch", "imagenet": "imagenet", "vggface": "vggf_sup", "ours": "vggf_ours"}
FRACTIONS = {"100%": "1.0", "10%": "0.1", "2%": "0.02"}
COLUMNS = (("accuracy", None), ("valence", "rmse"), ("valence", "sagr"), ("valence", "pcc"), ("valence", "ccc"),
           ("arousal", "rmse"), ("arousal", "sagr"), ("arousal", "pcc"), ("arousal", "ccc"))
# Acc., valence RMSE SAGR PCC CCC, arousal RMSE SAGR PCC CCC (Table 12).
PAPER_T12 = {
    "100%": {"random": (0.590, 0.370, 0.790, 0.696, 0.695, 0.339, 0.781, 0.613, 0.611),
             "imagenet": (0.592, 0.360, 0.789, 0.705, 0.705, 0.327, 0.792, 0.624, 0.620),
             "vggface": (0.601, 0.369, 0.798, 0.707, 0.706, 0.330, 0.796, 0.625, 0.624),
             "ours": (0.602, 0.356, 0.793, 0.711, 0.710, 0.328, 0.793, 0.634, 0.629)},
    "10%": {"random": (0.493, 0.402, 0.752, 0.626, 0.625, 0.366, 0.753, 0.536, 0.536),
            "imagenet": (0.548, 0.383, 0.784, 0.655, 0.654, 0.351, 0.767, 0.569, 0.566),
            "vggface": (0.529, 0.401, 0.755, 0.636, 0.634, 0.372, 0.750, 0.532, 0.526),
            "ours": (0.562, 0.382, 0.780, 0.678, 0.678, 0.344, 0.803, 0.600, 0.599)},
    "2%": {"random": (0.419, 0.453, 0.727, 0.515, 0.515, 0.400, 0.747, 0.423, 0.422),
           "imagenet": (0.479, 0.411, 0.740, 0.562, 0.557, 0.362, 0.769, 0.465, 0.456),
           "vggface": (0.511, 0.416, 0.778, 0.610, 0.607, 0.384, 0.768, 0.485, 0.485),
           "ours": (None,) * 9},
}


def ours_values(metrics):
    """The nine Table 12 numbers of one metrics.json (None entries when it is missing)."""
    if metrics is None:
        return (None,) * len(COLUMNS)
    return tuple(metrics[a] if b is None else (metrics[a] or {}).get(b) for a, b in COLUMNS)


def cell(ours, paper):
    def fmt(v):
        return "-" if v is None else f"{v:.3f}"
    return f"{fmt(ours)} ({fmt(paper)})"


def table12(runs):
    header = ["Data amount", "Init. method", "Acc.", "V RMSE", "V SAGR", "V PCC", "V CCC",
              "A RMSE", "A SAGR", "A PCC", "A CCC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for frac, per in PAPER_T12.items():
        for name, paper in per.items():
            path = os.path.join(runs, f"affectnet_{INITS[name]}_{FRACTIONS[frac]}", "metrics.json")
            metrics = None
            if os.path.isfile(path):
                with open(path) as f:
                    metrics = json.load(f)
            cells = [cell(o, p) for o, p in zip(ours_values(metrics), paper)]
            lines.append("| " + " | ".join([frac, name, *cells]) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m emotion.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/emotion", help="folder holding the runs of scripts/table12.sh")
    args = parser.parse_args(argv)
    text = "Table 12: AffectNet, ours (paper)\n\n" + table12(args.runs) + "\n"
    os.makedirs(args.runs, exist_ok=True)
    with open(os.path.join(args.runs, "table12.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
