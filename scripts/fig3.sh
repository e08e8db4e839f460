#!/usr/bin/env bash
# Paper Fig. 3 (§4 "Self-distillation for semi-supervised learning"): 300W NME of the self-distilled
# student (left) against the amount of unlabelled data, 100 % being the size of 300W's training set,
# and (right) against the number of self-distillation steps. Writes $RUNS/fig3.png and $RUNS/fig3.md.
#
#   DATA=/data SWAV=runs/swav_vggface2/backbone.pth bash scripts/fig3.sh
#   bash scripts/fig3.sh --synthetic        # the same steps on the built-in synthetic set (scripts/common.sh)
#
# DATA holds 300W/ AFLW/ WFLW/ COFW/ in their released layouts (landmarks/README.md); COFW/ also
# holds COFW_train.mat from COFW.zip. Steps:
#   1. the unlabelled pool: the training images of 300W (first, so 100 % = 300W), AFLW-19, WFLW and
#      COFW, without any test image of 300W, WFLW, AFLW-19 or COFW-68 (python -m distill.pool);
#   2. the teacher: landmarks.train on FRACTION of 300W from SWAV (TEACHER=path reuses a finished run,
#      e.g. Table 6's runs/landmarks/300w_0.02_ours_vggf/last.pth);
#   3. one self-distillation step for each amount in AMOUNTS (x the 300W training set);
#   4. STEPS steps with the whole pool, every student scored (its step 1 is the left panel's last point);
#   5. python -m distill.collect --figure 3.
# The paper does not say which label regime Fig. 3 uses; FRACTION defaults to 2 %. Finished runs
# (metrics.json present) are skipped, interrupted ones resume. Env: FRACTION, AMOUNTS, STEPS, RUNS,
# TEACHER, POOL, NGPU / LAUNCH, DRY_RUN (scripts/common.sh), EXTRA (key=value for every distill run).
# Compute: 1 teacher (ResNet-50, 256 px, 480 epochs at 2 %) + len(AMOUNTS) one-step runs + one STEPS-step
# run; a step is 60 epochs over the labelled + unlabelled images (the whole pool: ~32k images).
# --synthetic: the tiny synthetic set, distill/configs/synthetic.yaml and landmarks/configs/synthetic.yaml
# (ResNet-18, 64 px; teacher 50 iterations, 5 epochs per step), SwAV = common.sh's tiny backbone.
set -euo pipefail
source "$(dirname "$0")/common.sh"
FRACTION=${FRACTION:-0.02}
STEPS=${STEPS:-3}
EXTRA=${EXTRA:-}
if (( SYNTHETIC )); then
    DATA=$SYN RUNS=${RUNS:-$SYN_RUNS/distill/fig3} SWAV=${SWAV:-$SYN_CKPT}
    AMOUNTS=${AMOUNTS:-"1 2 4"}          # the pool: 6 (300W) + 6 (WFLW) + 8 (AFLW) + 24 (unlabelled) images
    LM_CONFIG=landmarks/configs/synthetic.yaml CONFIG=distill/configs/synthetic.yaml TEACHER_EPOCHS=50
    POOL_SOURCES=(--dataset 300w="$DATA/300W" --dataset wflw="$DATA/WFLW" --dataset aflw19="$DATA/AFLW"
                  --dataset folder="$DATA/unlabelled" --exclude-test-of cofw68="$DATA/COFW68")
else
    DATA=${DATA:-data} RUNS=${RUNS:-runs/distill/fig3} SWAV=${SWAV:-runs/swav_vggface2/backbone.pth}
    AMOUNTS=${AMOUNTS:-"0.25 0.5 1 2 5"}  # the whole pool is ~10x 300W (3148 + 20000 + 7500 + 1345)
    LM_CONFIG=landmarks/configs/300w.yaml CONFIG=distill/configs/300w.yaml
    case $FRACTION in 1.0) TEACHER_EPOCHS=60 ;; 0.1) TEACHER_EPOCHS=240 ;; *) TEACHER_EPOCHS=480 ;; esac  # as table6.sh
    POOL_SOURCES=(--dataset 300w="$DATA/300W" --dataset aflw19="$DATA/AFLW" --dataset wflw="$DATA/WFLW"
                  --dataset cofw="$DATA/COFW" --exclude-test-of cofw68="$DATA/COFW")
fi
need "$SWAV" "SwAV backbone" SWAV
run mkdir -p "$RUNS"
POOL=${POOL:-$RUNS/pool.txt}
[[ -f $POOL ]] || run $PY -m distill.pool --out "$POOL" "${POOL_SOURCES[@]}"

if [[ -z ${TEACHER:-} ]]; then
    TEACHER=$RUNS/teacher_$FRACTION/last.pth
    [[ -f $(dirname "$TEACHER")/metrics.json ]] || run $LAUNCH landmarks.train --config $LM_CONFIG \
        data.root="$DATA/300W" data.val_split= model.init="$SWAV" data.fraction=$FRACTION \
        optim.epochs=$TEACHER_EPOCHS out="$(dirname "$TEACHER")"
fi
SUBSET=$(dirname "$TEACHER")/subset_keys.txt
SUBSET_ARG=""
[[ -f $SUBSET || ( ${DRY_RUN:-0} == 1 && $FRACTION != 1.0 ) ]] && SUBSET_ARG="data.subset_file=$SUBSET"

distill() {  # NAME STEPS AMOUNT
    [[ -f $RUNS/$1/metrics.json ]] && { echo "done: $RUNS/$1"; return; }
    run $LAUNCH distill.train --config $CONFIG --teacher "$TEACHER" --student-init "$SWAV" --unlabeled "$POOL" \
        --steps "$2" data.root="$DATA/300W" data.fraction=$FRACTION unlabeled.amount="$3" \
        label="Ours (SwAV)" out="$RUNS/$1" $SUBSET_ARG $EXTRA
}

for amount in $AMOUNTS; do distill "amount_$amount" 1 "$amount"; done
distill "amount_all_steps_$STEPS" "$STEPS" null
run $PY -m distill.collect --figure 3 --runs "$RUNS" --split full
