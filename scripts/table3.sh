#!/usr/bin/env bash
# Paper Table 3 (§4 "Other supervised pre-training"): DISFA fine-tuning ICC (3 subject folds, pooled)
# after supervised pre-training on ImageNet, VGG-Face (CosFace) and 300W (landmarks), 100 / 10 / 1 %.
#
#   DISFA=/data/DISFA W300=/data/300W SUP_VGGF=runs/fr_vggface2_scratch_1.0/backbone.pth bash scripts/table3.sh
#   bash scripts/table3.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
#
# Sup. (300W) is the backbone of the landmark model trained from scratch on all of 300W, as
# landmarks/README.md documents (scripts/table6.sh trains the same run): landmarks.train, then
# landmarks.export to SUP300W. The Sup. (ImageNet) and Sup. (VGG-F) runs are those of Table 7
# (same folders under RUNS, skipped when done). LAUNCH, EXTRA, FRACTIONS: see scripts/table7.sh.
# Compute: 27 DISFA runs (3 inits x 3 regimes x 3 folds; ResNet-50, 224 px, 60-320 epochs) on one GPU each
# (NGPU=2 for the paper's 2 GPUs, App. A.2) plus one 300W landmark run; DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DISFA=$SYN/DISFA W300=$SYN/300W RUNS=${RUNS:-$SYN_RUNS/au} LANDMARK_RUN=$SYN_RUNS/landmarks/300w_1.0_scratch
    SUP300W=$SYN_RUNS/pretrained/sup_300w.pth SUP_VGGF=$SYN_CKPT IMAGENET=$SYN_CKPT
    LM_EXTRA=$(tiny landmarks) EXTRA="$(tiny au) ${EXTRA:-}"
fi
DISFA=${DISFA:-data/DISFA}
W300=${W300:-data/300W}
RUNS=${RUNS:-runs/au}
LANDMARK_RUN=${LANDMARK_RUN:-runs/landmarks/300w_1.0_scratch}
SUP300W=${SUP300W:-runs/pretrained/sup_300w.pth}
FRACTIONS=${FRACTIONS:-"1.0 0.1 0.01"}
EXTRA=${EXTRA:-}
declare -A INIT=([imagenet]=${IMAGENET:-imagenet} [vggf_sup]=${SUP_VGGF:-runs/fr_vggface2_scratch_1.0/backbone.pth}
                 [300w_sup]=$SUP300W)
epochs_for() { case $1 in 1.0) echo 60 ;; 0.1) echo 160 ;; *) echo 320 ;; esac; }   # as scripts/table7.sh

if [[ ! -f $SUP300W ]]; then
    cell landmarks landmarks/configs/300w.yaml 300w $LANDMARK_RUN 60 data.root=$W300 model.init=scratch \
        data.fraction=1.0 ${LM_EXTRA:-}
    run $PY -m landmarks.export --checkpoint $LANDMARK_RUN/last.pth --out $SUP300W
fi
need "${INIT[vggf_sup]}" "Sup. (VGG-F) backbone" SUP_VGGF

for frac in $FRACTIONS; do
    for method in imagenet vggf_sup 300w_sup; do
        dir=$RUNS/disfa_${method}_finetune_$frac
        for fold in 0 1 2; do
            cell au_intensity au_intensity/configs/disfa.yaml disfa $dir/f$fold $(epochs_for "$frac") \
                data.root=$DISFA data.fold=$fold data.fraction=$frac model.init=${INIT[$method]} $EXTRA
        done
        run $PY -m au_intensity.eval --config au_intensity/configs/disfa.yaml --out $dir --pool $dir/f0 $dir/f1 $dir/f2
    done
done
run $PY -m au_intensity.tables --table 3 --runs $RUNS
search_summary $RUNS
