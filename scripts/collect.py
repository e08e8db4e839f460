"""One entry point for the paper's Tables 1-12: our numbers beside the published ones, in the paper's layout.

    python scripts/collect.py --table 6 runs [runs_elsewhere ...] [--long] [--out table6.md]

Each cell reads ``ours / paper (ours - paper)``; "–" marks a run not found (or a cell the paper
leaves empty). The paper number in a cell is the one printed at that row and column of Table N.
``--long`` adds one line per cell naming its source (table, row, column). A RUNS argument is the
folder holding the scripts' run folders (runs/landmarks, runs/au, runs/emotion, runs/r3d,
runs/table4) or one of those folders itself (several may be given, e.g. runs/landmarks runs/au). Layouts and paper numbers: scripts/collect_tables.py.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from collect_tables import SUBDIRS, TABLES  # noqa: E402

DASH = "–"


def fmt(value, digits):
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def cell(ours, paper, digits):
    """``ours / paper (diff)``; the difference only when both are numbers."""
    text = f"{fmt(ours, digits)} / {fmt(paper, digits)}"
    if isinstance(ours, (int, float)) and isinstance(paper, (int, float)):
        text += f" ({ours - paper:+.{digits}f})"
    return text


def render(grid):
    lines = [f"**{grid.title}** (cells: ours / paper (difference))", "",
             "| " + " | ".join(grid.header) + " |", "|" + "---|" * len(grid.header)]
    for labels, cells in grid.rows:
        values = [cell(o, p, k) for (o, p), k in zip(cells, grid.digits)]
        lines.append("| " + " | ".join(list(labels) + values) + " |")
    return "\n".join(lines)


def render_long(number, grid):
    """One line per cell that has a paper number: where it comes from, the paper value, ours, the difference."""
    lines = ["| Source | Paper | Ours | Difference |", "|---|---|---|---|"]
    columns = grid.header[grid.n_labels:]
    for labels, cells in grid.rows:
        row = " / ".join(label for label in labels if label)
        for column, (ours, paper), k in zip(columns, cells, grid.digits):
            if paper is None:
                continue
            diff = f"{ours - paper:+.{k}f}" if isinstance(ours, (int, float)) and isinstance(paper, (int, float)) \
                else DASH
            lines.append(f"| Table {number}, row {row}, column {column} | {fmt(paper, k)} | {fmt(ours, k)} | {diff} |")
    return "\n".join(lines)


def resolver(roots):
    """``kind -> folder``: the root named like that kind's folder (runs/au for "au"), else the first root
    holding it as a sub-folder, else the first root itself."""
    def folder(kind):
        sub = SUBDIRS[kind]
        named = [r for r in roots if os.path.basename(os.path.normpath(r)) == sub]
        holding = [os.path.join(r, sub) for r in roots if os.path.isdir(os.path.join(r, sub))]
        return (named + holding + list(roots))[0]
    return folder


def collect(number, roots, long=False):
    """The markdown text of Table ``number`` from the runs under ``roots``."""
    if number not in TABLES:
        raise SystemExit(f"collect: no Table {number}; the paper has Tables {min(TABLES)}-{max(TABLES)}")
    grids = TABLES[number](resolver(list(roots)))
    parts = [render(g) for g in grids]
    if long:
        parts += [render_long(number, g) for g in grids]
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=int, required=True, choices=sorted(TABLES))
    parser.add_argument("runs", nargs="*", default=["runs"], help="folder(s) holding the run folders (default runs)")
    parser.add_argument("--long", action="store_true", help="also list every cell with its table / row / column")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args(argv)
    text = collect(args.table, args.runs or ["runs"], long=args.long)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
