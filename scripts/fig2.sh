#!/usr/bin/env bash
# Paper Fig. 2 (§3.3 "Hyper-parameter optimization"): 300W landmark NME of three initialisations for
# combinations of schedule length and backbone-relative learning rate at one learning rate, on a radar
# plot ("24 of those combinations are placed on the perimeter"). scripts/sweep.py runs the grid, scores
# every run on a validation set held out from the training faces (never the test set), retrains the best
# combination per init on the whole data point, and writes SWEEP/fig2.png and SWEEP/sweep.json.
#
#   DATA=/data SUP_VGGF=runs/fr_vggface2_scratch_1.0/backbone.pth VGGF_CKPT=runs/swav_vggface2/backbone.pth \
#   bash scripts/fig2.sh
#   bash scripts/fig2.sh --synthetic        # the same steps on the built-in synthetic set (scripts/common.sh)
#
# The paper names neither the data point nor the three methods: we use 300W at FRACTION (default 2 %)
# with Scratch, Sup. (VGG-F) and Ours (VGG-F), lr LR (default 1e-4, App. A.2), EPOCHS x BACKBONE_LR
# (4 x 6 = 24 combinations). Env: DATA (holds 300W/), SUP_VGGF, VGGF_CKPT, FRACTION, LR, EPOCHS,
# BACKBONE_LR, SWEEP (output folder), NGPU / LAUNCH, EXTRA (overrides for every run), DRY_RUN=1 (prints
# the jobs through `sweep.py --emit shell`), EMIT=slurm (writes SWEEP/sweep.sbatch, a job array).
# Compute: 72 landmark runs (ResNet-50, 256 px, 60-480 epochs on the 2 % subset less its validation
# faces) + 3 refits, one GPU each; at 2 % of 300W (63 faces) a 480-epoch run is a few GPU-minutes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DATA=$SYN SUP_VGGF=$SYN_CKPT VGGF_CKPT=$SYN_CKPT SWEEP=${SWEEP:-$SYN_RUNS/fig2} FRACTION=${FRACTION:-1.0}
    LR=${LR:-3e-3} EPOCHS=${EPOCHS:-"1 2"} BACKBONE_LR=${BACKBONE_LR:-"0.1 1"} EXTRA="$(tiny landmarks) ${EXTRA:-}"
fi
DATA=${DATA:-data}
SUP_VGGF=${SUP_VGGF:-runs/fr_vggface2_scratch_1.0/backbone.pth}
VGGF_CKPT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
FRACTION=${FRACTION:-0.02}
LR=${LR:-1e-4}
EPOCHS=${EPOCHS:-"60 120 240 480"}
BACKBONE_LR=${BACKBONE_LR:-"0.01 0.1 0.5 1 2 5"}
SWEEP=${SWEEP:-runs/sweep/fig2_300w_$FRACTION}
EXTRA=${EXTRA:-}
need "$SUP_VGGF" "Sup. (VGG-F) backbone" SUP_VGGF
need "$VGGF_CKPT" "Ours (VGG-F) backbone" VGGF_CKPT

# "epochs" before "backbone_lr_mult": the perimeter labels read <schedule length>_<backbone lr> as in Fig. 2.
args=(--task landmarks --config landmarks/configs/300w.yaml --out "$SWEEP" --launch "$LAUNCH"
      --grid "lr=$LR" --grid "epochs=${EPOCHS// /,}" --grid "backbone_lr_mult=${BACKBONE_LR// /,}"
      --init scratch=scratch --init "sup_vggf=$SUP_VGGF" --init "ours_vggf=$VGGF_CKPT"
      data.root="$DATA/300W" data.fraction="$FRACTION" $EXTRA)
if [[ ${DRY_RUN:-0} == 1 ]]; then
    $PY scripts/sweep.py "${args[@]}" --emit shell
elif [[ -n ${EMIT:-} ]]; then
    $PY scripts/sweep.py "${args[@]}" --emit "$EMIT"
else
    $PY scripts/sweep.py "${args[@]}"
    echo "Fig. 2: $SWEEP/fig2.png (summary $SWEEP/sweep.json)"
fi
