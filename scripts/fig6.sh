#!/usr/bin/env bash
# Fig. 6 (paper App. D.2): cumulative 3D reconstruction error curves on Florence for the Table 9 models
# trained on (a) 100 %, (b) 10 % and (c) 2 % of 300W-LP. The paper shows only curves (no numbers in its
# text); the mean NME of every curve is printed beside the figure.
# The Florence protocol is [unverified] (shared/research/anchors_landmarks_3d.md §4.5): renders of the
# 53 neutral scans under Florence/renders/subject_NN/*.jpg + .mat (pt3d_68 for the crop box), scans in
# Florence/subject_NN/Model/frontal1/obj/*.obj; predictions are aligned to the scan by similarity ICP and
# the mean distance is divided by the outer inter-ocular distance (eval.florence_norm=bbox_diag for the
# scan's bounding-box diagonal).
# Usage (after scripts/table9.sh): DATA=/data/3d BFM=/data/BFM/BFM.mat bash scripts/fig6.sh
#        bash scripts/fig6.sh --synthetic  # after scripts/table9.sh --synthetic (scripts/common.sh)
# Compute: 15 Florence evaluations of the Table 9 checkpoints (one GPU, minutes each); DRY_RUN=1 prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DATA=$SYN BFM=face_model/mesh_topology.mat RUNS=${RUNS:-$SYN_RUNS/r3d} EXTRA="$(tiny r3d) ${EXTRA:-}"
fi
DATA=${DATA:-data/3d}
BFM=${BFM:-$DATA/BFM.mat}
RUNS=${RUNS:-runs/r3d}
EXTRA=${EXTRA:-}
declare -A LABEL=([scratch]="Scratch" [imagenet]="Sup. (Imagenet)" [sup_vggf]="Sup. (VGG-F)"
                  [ours_flickrf]="Ours (Flickr-F)" [ours_vggf]="Ours (VGG-F)")
declare -A REGIME=([1.0]="100%" [0.1]="10%" [0.02]="2%")
curves=()
for frac in 1.0 0.1 0.02; do
  for name in scratch imagenet sup_vggf ours_flickrf ours_vggf; do
    dir=$RUNS/300wlp_${frac}_$name
    if ! grep -q '"florence"' "$dir/metrics.json" 2>/dev/null; then
      run $PY -m reconstruction3d.eval --config reconstruction3d/configs/300wlp.yaml --checkpoint "$dir/last.pth" \
        --dataset florence data.root="$DATA" model.topology="$BFM" $EXTRA
    fi
    curves+=(--curve "${REGIME[$frac]}:${LABEL[$name]}=$dir/metrics.json")
  done
done
run $PY -m reconstruction3d.fig6 --out "$RUNS/fig6.png" "${curves[@]}"
