#!/usr/bin/env bash
# Paper Fig. 4 (§4 "Self-distillation for semi-supervised learning"): 300W NME after self-distillation
# for three student initialisations (scratch, supervised VGG-Face, unsupervised SwAV VGG-Face) and
# three label regimes (100 / 10 / 2 %), next to the fine-tuned teacher it started from. The teacher
# of each cell is the landmark model fine-tuned from the same initialisation on the same labels
# (paper: "These networks are fine-tuned on 300W ... Then, they are used as students for
# self-distillation"). Writes $RUNS/fig4.png and $RUNS/fig4.md.
#
#   DATA=/data SUP_VGGF=runs/fr_vggface2_scratch_1.0/backbone.pth VGGF_CKPT=runs/swav_vggface2/backbone.pth \
#       bash scripts/fig4.sh
#   bash scripts/fig4.sh --synthetic        # the same steps on the built-in synthetic set (scripts/common.sh)
#
# Teachers are Table 6's runs when present (LM_RUNS/300w_<fraction>_<method>/, scripts/table6.sh),
# otherwise trained here with the same command; each distillation run reuses its teacher's
# subset_keys.txt, so student and teacher see the same labels. The unlabelled pool is Fig. 3's
# (POOL; built here when absent). STEPS self-distillation steps per cell (default 1: the paper does
# not state T for Fig. 4). Finished runs are skipped, interrupted ones resume.
# Env: METHODS, FRACTIONS, STEPS, RUNS, LM_RUNS, POOL, NGPU / LAUNCH, DRY_RUN (scripts/common.sh),
# EXTRA (key=value for every distill run).
# Compute: up to 9 teachers (Table 6's) + 9 distillation runs of STEPS x 60 epochs over ~32k images.
# --synthetic: the tiny synthetic set at the synthetic configs' sizes, common.sh's tiny SwAV backbone
# standing in for both pre-trained inits (so its Sup. and Ours rows share a backbone: plumbing only).
set -euo pipefail
source "$(dirname "$0")/common.sh"
METHODS=${METHODS:-"scratch sup_vggf ours_vggf"}
FRACTIONS=${FRACTIONS:-"1.0 0.1 0.02"}
STEPS=${STEPS:-1}
EXTRA=${EXTRA:-}
declare -A LABEL=([scratch]="Scratch" [sup_vggf]="Sup. (VGG-F)" [ours_vggf]="Ours (VGG-F)")
if (( SYNTHETIC )); then
    DATA=$SYN RUNS=${RUNS:-$SYN_RUNS/distill/fig4} LM_RUNS=${LM_RUNS:-$SYN_RUNS/distill/teachers}
    SUP_VGGF=${SUP_VGGF:-$SYN_CKPT} VGGF_CKPT=${VGGF_CKPT:-$SYN_CKPT} POOL=${POOL:-$SYN_RUNS/distill/fig3/pool.txt}
    LM_CONFIG=landmarks/configs/synthetic.yaml CONFIG=distill/configs/synthetic.yaml
    POOL_SOURCES=(--dataset 300w="$DATA/300W" --dataset wflw="$DATA/WFLW" --dataset aflw19="$DATA/AFLW"
                  --dataset folder="$DATA/unlabelled" --exclude-test-of cofw68="$DATA/COFW68")
    epochs_for() { echo 50; }
else
    DATA=${DATA:-data} RUNS=${RUNS:-runs/distill/fig4} LM_RUNS=${LM_RUNS:-runs/landmarks}
    SUP_VGGF=${SUP_VGGF:-runs/fr_vggface2_scratch_1.0/backbone.pth} VGGF_CKPT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
    POOL=${POOL:-runs/distill/fig3/pool.txt}
    LM_CONFIG=landmarks/configs/300w.yaml CONFIG=distill/configs/300w.yaml
    POOL_SOURCES=(--dataset 300w="$DATA/300W" --dataset aflw19="$DATA/AFLW" --dataset wflw="$DATA/WFLW"
                  --dataset cofw="$DATA/COFW" --exclude-test-of cofw68="$DATA/COFW")
    epochs_for() { case $1 in 1.0) echo 60 ;; 0.1) echo 240 ;; *) echo 480 ;; esac; }  # as table6.sh
fi
declare -A INIT=([scratch]=scratch [sup_vggf]=$SUP_VGGF [ours_vggf]=$VGGF_CKPT)
declare -A VAR=([sup_vggf]=SUP_VGGF [ours_vggf]=VGGF_CKPT)
run mkdir -p "$RUNS" "$(dirname "$POOL")"
[[ -f $POOL ]] || run $PY -m distill.pool --out "$POOL" "${POOL_SOURCES[@]}"

for frac in $FRACTIONS; do
    for method in $METHODS; do
        init=${INIT[$method]}
        [[ $init == scratch ]] || need "$init" "initialisation for $method" "${VAR[$method]}"
        teacher=$LM_RUNS/300w_${frac}_${method}
        if [[ ! -f $teacher/metrics.json ]]; then
            first=$(ls "$LM_RUNS"/300w_"${frac}"_*/subset_keys.txt 2>/dev/null | head -n 1 || true)
            run $LAUNCH landmarks.train --config $LM_CONFIG data.root="$DATA/300W" data.val_split= \
                model.init="$init" data.fraction=$frac optim.epochs=$(epochs_for "$frac") out="$teacher" \
                ${first:+data.subset_file=$first}
        fi
        out=$RUNS/${method}_${frac}
        [[ -f $out/metrics.json ]] && { echo "done: $out"; continue; }
        subset=""
        [[ -f $teacher/subset_keys.txt || ( ${DRY_RUN:-0} == 1 && $frac != 1.0 ) ]] && \
            subset="data.subset_file=$teacher/subset_keys.txt"
        run $LAUNCH distill.train --config $CONFIG --teacher "$teacher/last.pth" --student-init "$init" \
            --unlabeled "$POOL" --steps "$STEPS" data.root="$DATA/300W" data.fraction=$frac \
            label="${LABEL[$method]}" out="$out" $subset $EXTRA
    done
done
run $PY -m distill.collect --figure 4 --runs "$RUNS" --split full
