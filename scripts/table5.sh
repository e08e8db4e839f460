#!/usr/bin/env bash
# Paper Table 5 (§5.2): few-shot landmark NME (%) of Ours (VGG-F) on 300W (full set; 100 / 10 /
# 1.5 %), AFLW-19 (NME_diag; 100 / 10 / 1 %) and WFLW (100 / 10 / 0.7 %), with the paper's numbers
# and the few-shot methods it compares with.
#
#   DATA=/data VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table5.sh
#
# The 100 % and 10 % runs are the Table 6 runs (same names; skipped when scripts/table6.sh made
# them). LAUNCH / EXTRA / RUNS as in scripts/table6.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LAUNCH=${LAUNCH:-"$PY -m"}
DATA=${DATA:-data}
RUNS=${RUNS:-runs/landmarks}
EXTRA=${EXTRA:-}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
declare -A ROOT=([300w]=$DATA/300W [wflw]=$DATA/WFLW [aflw19]=$DATA/AFLW)
declare -A LOWEST=([300w]=0.015 [aflw19]=0.01 [wflw]=0.007)
[[ -f $INIT ]] || { echo "missing Ours (VGG-F) checkpoint: $INIT (set VGGF_CKPT)" >&2; exit 1; }

epochs_for() { case $1 in 1.0) echo 60 ;; 0.1) echo 240 ;; *) echo 480 ;; esac; }

for ds in 300w aflw19 wflw; do
    for frac in 1.0 0.1 ${LOWEST[$ds]}; do
        out=$RUNS/${ds}_${frac}_ours_vggf
        [[ -f $out/metrics.json ]] && { echo "done: $out"; continue; }
        $LAUNCH landmarks.train --config landmarks/configs/$ds.yaml data.root=${ROOT[$ds]} \
            model.init=$INIT data.fraction=$frac optim.epochs=$(epochs_for "$frac") out=$out $EXTRA
    done
done
$PY -m landmarks.tables --table 5 --runs $RUNS --out $RUNS/table5.md
