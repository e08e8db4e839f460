#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic face benchmark, on 2 CPU cores in about 30 minutes:
# synthetic data -> SwAV pre-training of a ResNet-18 on 8,000 unlabelled faces, with its probes -> landmarks
# (300W), AU intensity (DISFA) and 3D reconstruction (300W-LP -> AFLW2000-3D) fine-tuned at 100 / 10 / 2 % from
# scratch and from SwAV (3 seeds at 2 %) -> the table beside each task's floor, gain.png, probes.png, and whether
# "pre-training helps most at low data" holds here. Outputs in runs/demo/ (table.md, demo.json, timings.json);
# a rerun skips finished stages and runs.
#
#   make demo                     # or: bash scripts/demo.sh [--out runs/demo] [--jobs 2] [--dry-run]
#   DEMO_JOBS=1 make demo         # one run at a time (a machine with one free core)
#   DEMO_THREADS=1 make demo      # SwAV on one thread (a busy machine: more threads than free cores stall)
# Compute: 33.6 min measured on 2 idle CPU cores before the 3D epochs were cut, ~30 min now (scripts/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" scripts/demo.py "$@"
