#!/usr/bin/env bash
# Paper Table 10 (App. D): per-AU ICC on DISFA (3 subject folds, pooled) of Ours (VGG-F) fine-tuned on
# 1 % of the frames, beside KBSS / KJRE / CLFL / SSCFL; also at 2 % and 6 %, those methods' label amounts.
#
#   DISFA=/data/DISFA VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table10.sh
#   bash scripts/table10.sh --synthetic     # the same steps on the built-in synthetic set (scripts/common.sh)
#
# The 1 % runs are Table 7's (same folders under RUNS, skipped when done). LAUNCH, EXTRA: see table7.sh.
# Compute: 9 DISFA runs (3 amounts x 3 folds; ResNet-50, 224 px, 320 epochs, batch 48; 3 shared with
# Table 7), one GPU each (NGPU=2: the paper's 2 GPUs); DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DISFA=$SYN/DISFA VGGF_CKPT=$SYN_CKPT RUNS=${RUNS:-$SYN_RUNS/au} EXTRA="$(tiny au) ${EXTRA:-}"
fi
DISFA=${DISFA:-data/DISFA}
RUNS=${RUNS:-runs/au}
EXTRA=${EXTRA:-}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
need "$INIT" "Ours (VGG-F) checkpoint" VGGF_CKPT

for frac in 0.01 0.02 0.06; do
    dir=$RUNS/disfa_vggf_ours_finetune_$frac
    for fold in 0 1 2; do
        cell au_intensity au_intensity/configs/disfa.yaml disfa $dir/f$fold 320 \
            data.root=$DISFA data.fold=$fold data.fraction=$frac model.init=$INIT $EXTRA
    done
    run $PY -m au_intensity.eval --config au_intensity/configs/disfa.yaml --out $dir --pool $dir/f0 $dir/f1 $dir/f2
done
run $PY -m au_intensity.tables --table 10 --runs $RUNS
search_summary $RUNS
