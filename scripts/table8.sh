#!/usr/bin/env bash
# Paper Table 8 (§5.3): per-AU ICC on BP4D (FERA2015 train -> devel) of Ours (VGG-F) fine-tuned on 1 %
# of the frames, beside KBSS / KJRE / CLFL / SSCFL; also at 2 % and 6 %, those methods' label amounts.
# Table 11 (App. D) prints the same numbers again: scripts/table11.sh reuses these runs.
#
#   BP4D=/data/BP4D VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table8.sh
#   bash scripts/table8.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
#
# The 1 % run is Table 7's (same folder under RUNS, skipped when done). LAUNCH, EXTRA: see table7.sh.
# Compute: 3 BP4D runs (ResNet-50, 224 px, 320 epochs, batch 48; one shared with Table 7), one GPU
# each (NGPU=2: the paper's 2 GPUs); DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    BP4D=$SYN/BP4D VGGF_CKPT=$SYN_CKPT RUNS=${RUNS:-$SYN_RUNS/au} EXTRA="$(tiny au) ${EXTRA:-}"
fi
BP4D=${BP4D:-data/BP4D}
RUNS=${RUNS:-runs/au}
EXTRA=${EXTRA:-}
TABLE=${TABLE:-8}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
need "$INIT" "Ours (VGG-F) checkpoint" VGGF_CKPT

for frac in 0.01 0.02 0.06; do
    dir=$RUNS/bp4d_vggf_ours_finetune_$frac
    cell au_intensity au_intensity/configs/bp4d.yaml bp4d $dir 320 data.root=$BP4D data.fraction=$frac \
        model.init=$INIT $EXTRA
done
run $PY -m au_intensity.tables --table $TABLE --runs $RUNS
search_summary $RUNS
