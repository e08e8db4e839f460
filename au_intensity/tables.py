"""Tables 3, 7, 8, 10 and 11 of the paper (§4, §5.3, App. D) from our runs, with the paper's numbers beside ours.

    python -m au_intensity.tables --table {3,7,8,10,11} [--runs runs/au]

Reads ``RUNS/<dataset>_<init>_<adaptation>_<fraction>/metrics.json`` (DISFA: the pooled folds written
by ``au_intensity.eval --pool``; BP4D: the run itself), as scripts/table{3,7,8,10,11}.sh lay them out,
prints a markdown table "ours (paper)" and writes it to RUNS/tableN.md. Paper numbers are copied
from the paper text; cells the stored text lost are None (see au_intensity/README.md).
"""
import argparse
import json
import os

# Row name in the paper -> the <init> part of our run names.
INITS = {"Scratch": "scratch", "Sup. (ImageNet)": "imagenet", "Sup. (VGG-F)": "vggf_sup", "Sup. (300W)": "300w_sup",
         "Ours (Flickr-F)": "flickr_ours", "Ours (VGG-F)": "vggf_ours"}
FRACTIONS = {"100%": "1.0", "10%": "0.1", "1%": "0.01", "2%": "0.02", "6%": "0.06"}

# Table 3: DISFA fine-tune ICC of supervised pre-training.
PAPER_T3 = {"100%": {"Sup. (ImageNet)": .560, "Sup. (VGG-F)": .575, "Sup. (300W)": .463},
            "10%": {"Sup. (ImageNet)": .556, "Sup. (VGG-F)": .560, "Sup. (300W)": .460},
            "1%": {"Sup. (ImageNet)": .453, "Sup. (VGG-F)": .542, "Sup. (300W)": .414}}
# Table 7: (DISFA finetune, DISFA linear, BP4D finetune, BP4D linear). The stored text garbles the 10% rows of
# Sup. (VGG-F) and Ours (Flickr-F): only their last cells (.564, .603) survive; their DISFA fine-tune values are
# recovered from Table 3 (.560) and Table 2 (Flickr-Face 10%: .581); the other cells are None.
PAPER_T7 = {
    "100%": {"Scratch": (.318, None, .617, None), "Sup. (ImageNet)": (.560, .316, .708, .587),
             "Sup. (VGG-F)": (.575, .235, .700, .564), "Ours (Flickr-F)": (.590, .373, .715, .599),
             "Ours (VGG-F)": (.598, .342, .719, .610)},
    "10%": {"Scratch": (.313, None, .622, None), "Sup. (ImageNet)": (.556, .300, .698, .573),
            "Sup. (VGG-F)": (.560, None, None, .564), "Ours (Flickr-F)": (.581, None, None, .603),
            "Ours (VGG-F)": (.592, .340, .706, .604)},
    "1%": {"Scratch": (.237, None, .586, None), "Sup. (ImageNet)": (.453, .301, .689, .564),
           "Sup. (VGG-F)": (.542, .187, .690, .562), "Ours (Flickr-F)": (.571, .321, .695, .596),
           "Ours (VGG-F)": (.560, .326, .694, .592)},
}
PAPER_T7_SOTA = ("0.57", None, "0.72", None)  # "SOTA (from paper) [49]", printed with two decimals
# Tables 8 and 11 (identical in the paper): BP4D per-AU ICC (AU 6, 10, 12, 14, 17, mean).
PAPER_T8 = (("KBSS [90]", "1%", (.760, .725, .840, .445, .454, .645)),
            ("KJRE [92]", "6%", (.710, .610, .870, .390, .420, .600)),
            ("CLFL [91]", "1%", (.766, .703, .827, .411, .600, .680)),
            ("SSCFL [62]", "2%", (.766, .749, .857, .475, .553, .680)),
            ("Ours", "1%", (.789, .756, .882, .529, .578, .707)))
# Table 10: DISFA per-AU ICC (AU 1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26, average).
PAPER_T10 = (("KBSS [90]", "1%", (.136, .116, .480, .169, .433, .353, .710, .154, .248, .085, .778, .536, .350)),
             ("KJRE [92]", "6%", (.270, .350, .250, .330, .510, .310, .670, .140, .170, .200, .740, .250, .350)),
             ("CLFL [91]", "1%", (.263, .194, .459, .354, .516, .356, .707, .183, .340, .206, .811, .510, .408)),
             ("SSCFL [62]", "2%", (.327, .328, .645, .024, .601, .335, .783, .181, .243, .078, .882, .578, .413)),
             ("Ours", "1%", (.636, .667, .754, .367, .549, .535, .820, .313, .541, .199, .928, .608, .574)))
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
BP4D_AUS = (6, 10, 12, 14, 17)


def run_metrics(runs, dataset, init, adaptation, fraction):
    """metrics.json of one setting, or None when it has not been run."""
    path = os.path.join(runs, f"{dataset}_{init}_{adaptation}_{FRACTIONS[fraction]}", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def cell(ours, paper):
    """"ours (paper)" with three decimals in the paper's style; "-" for a missing value."""
    def fmt(v):
        if v is None or isinstance(v, str):
            return v or "-"
        return f"{v:.3f}".replace("0.", ".", 1) if abs(v) < 1 else f"{v:.3f}"
    return f"{fmt(ours)} ({fmt(paper)})"


def _icc(metrics):
    return None if metrics is None else metrics["icc_mean"]


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def table3(runs):
    rows = [[frac] + [cell(_icc(run_metrics(runs, "disfa", INITS[name], "finetune", frac)), paper)
                      for name, paper in per.items()] for frac, per in PAPER_T3.items()]
    return _markdown(["Data amount", *PAPER_T3["100%"]], rows)


def table7(runs):
    rows = []
    for frac, per in PAPER_T7.items():
        for name, paper in per.items():
            ours = [_icc(run_metrics(runs, ds, INITS[name], mode, frac))
                    for ds in ("disfa", "bp4d") for mode in ("finetune", "linear")]
            rows.append([frac, name] + [cell(o, p) for o, p in zip(ours, paper)])
    rows.append(["", "SOTA (from paper) [49]"] + [cell(None, p) for p in PAPER_T7_SOTA])
    return _markdown(["Data amount", "Pretrain. method", "DISFA finetune", "DISFA linear", "BP4D finetune",
                      "BP4D linear"], rows)


def per_au_table(runs, dataset, aus, paper_rows, init="vggf_ours", extra_fractions=("2%", "6%")):
    """Tables 8 / 10 / 11: the paper's rows, then ours (Ours (VGG-F), fine-tuned) at 1 % and, when run,
    at the other methods' data amounts."""
    rows = [[name, frac, *(cell(None, v) for v in values)] for name, frac, values in paper_rows]
    paper_ours = paper_rows[-1][2]
    for frac in ("1%", *extra_fractions):
        m = run_metrics(runs, dataset, init, "finetune", frac)
        if m is None and frac != "1%":
            continue
        ours = [None] * len(aus) + [None] if m is None else [m["icc"][f"AU{au}"] for au in aus] + [m["icc_mean"]]
        paper = paper_ours if frac == "1%" else [None] * len(ours)
        rows.append([f"ours, {init}", frac, *(cell(o, p) for o, p in zip(ours, paper))])
    return _markdown(["Method", "Data amount", *(f"AU{au}" for au in aus), "Avg."], rows)


TABLES = {
    "3": table3,
    "7": table7,
    "8": lambda runs: per_au_table(runs, "bp4d", BP4D_AUS, PAPER_T8),
    "10": lambda runs: per_au_table(runs, "disfa", DISFA_AUS, PAPER_T10),
    "11": lambda runs: per_au_table(runs, "bp4d", BP4D_AUS, PAPER_T8),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m au_intensity.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, choices=sorted(TABLES, key=int))
    parser.add_argument("--runs", default="runs/au", help="folder holding the runs of scripts/tableN.sh")
    args = parser.parse_args(argv)
    text = f"Table {args.table}: ICC, ours (paper)\n\n" + TABLES[args.table](args.runs) + "\n"
    os.makedirs(args.runs, exist_ok=True)
    with open(os.path.join(args.runs, f"table{args.table}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
