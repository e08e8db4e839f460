#!/usr/bin/env bash
# Paper Table 5 (§5.2): few-shot landmark NME (%) of Ours (VGG-F) on 300W (full set; 100 / 10 /
# 1.5 %), AFLW-19 (NME_diag; 100 / 10 / 1 %) and WFLW (100 / 10 / 0.7 %), with the paper's numbers
# and the few-shot methods it compares with.
#
#   DATA=/data VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table5.sh
#   bash scripts/table5.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
#
# The 100 % and 10 % runs are the Table 6 runs (same names; skipped when scripts/table6.sh made
# them). LAUNCH / EXTRA / RUNS as in scripts/table6.sh.
# Compute: 9 landmark runs (ResNet-50, 256 px, 60-480 epochs, batch 24) on one GPU each (the paper's
# setting), 3 of them shared with Table 6; DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DATA=$SYN VGGF_CKPT=$SYN_CKPT RUNS=${RUNS:-$SYN_RUNS/landmarks} EXTRA="$(tiny landmarks) ${EXTRA:-}"
fi
DATA=${DATA:-data}
RUNS=${RUNS:-runs/landmarks}
EXTRA=${EXTRA:-}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
declare -A ROOT=([300w]=$DATA/300W [wflw]=$DATA/WFLW [aflw19]=$DATA/AFLW)
declare -A LOWEST=([300w]=0.015 [aflw19]=0.01 [wflw]=0.007)
need "$INIT" "Ours (VGG-F) checkpoint" VGGF_CKPT

epochs_for() { case $1 in 1.0) echo 60 ;; 0.1) echo 240 ;; *) echo 480 ;; esac; }

for ds in 300w aflw19 wflw; do
    for frac in 1.0 0.1 ${LOWEST[$ds]}; do
        out=$RUNS/${ds}_${frac}_ours_vggf
        [[ -f $out/metrics.json ]] && { echo "done: $out"; continue; }
        cell landmarks landmarks/configs/$ds.yaml $ds $out $(epochs_for "$frac") data.root=${ROOT[$ds]} \
            model.init=$INIT data.fraction=$frac $EXTRA
    done
done
run $PY -m landmarks.tables --table 5 --runs $RUNS --out $RUNS/table5.md
search_summary $RUNS
