"""The side table of a table script's per-data-point search (paper §3.3): each cell's chosen hyper-parameters.

    python scripts/search_table.py --runs runs/landmarks --out runs/landmarks/search.md

Reads every ``RUNS/**/search.json`` that ``scripts/sweep.py --final-out`` left in a cell's folder and
writes one markdown row per cell: the chosen setting, its validation score (on data held out from the
cell's own training set) and the refit's folder, whose metrics.json the table reports.
"""
import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.files import write_text_atomic  # noqa: E402


def rows(runs):
    """(cell, chosen {key: value}, metric, value) for every search.json under ``runs``, sorted by cell."""
    out = []
    for path in sorted(glob.glob(os.path.join(runs, "**", "search.json"), recursive=True)):
        with open(path) as f:
            found = json.load(f)
        cell = os.path.relpath(os.path.dirname(path), runs)
        val = found["validation"]
        out.append((cell, found["chosen"], val["metric"], val["value"]))
    return out


def markdown(found):
    keys = sorted({k for _, chosen, _, _ in found for k in chosen})
    lines = ["| cell | " + " | ".join(k.split(".")[-1] for k in keys) + " | validation |",
             "|---" * (len(keys) + 2) + "|"]
    for cell, chosen, metric, value in found:
        lines.append(f"| {cell} | " + " | ".join(str(chosen.get(k, "")) for k in keys) + f" | {metric} {value:.4g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a table script's runs folder")
    parser.add_argument("--out", required=True, help="markdown file to write")
    args = parser.parse_args(argv)
    found = rows(args.runs)
    if not found:
        raise SystemExit(f"search_table: no search.json under {args.runs} (run the table with SEARCH=1)")
    text = markdown(found)
    write_text_atomic(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
