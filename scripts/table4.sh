#!/usr/bin/env bash
# Paper Table 4 (§5.1): CosFace on VGGFace2 from four initialisations x three data regimes, TAR on IJB-B / IJB-C.
#   DATA=/data FLICKR_CKPT=runs/swav_flickr/backbone.pth VGGF_CKPT=runs/swav_vggface2/backbone.pth \
#   NGPU=8 bash scripts/table4.sh
#   bash scripts/table4.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
# DATA holds VGGFace2/, IJBB/ and IJBC/ (face_recognition/configs/vggface2.yaml: data.vggface2, data.ijbb,
# data.ijbc; override with EXTRA="data.ijbb=/elsewhere/IJBB ..."). FLICKR_CKPT / VGGF_CKPT are the
# unsupervised backbones of "Ours (Flickr-F)" / "Ours (VGG-F)" (pretrain/). Each run evaluates
# IJB-B and IJB-C when it ends (eval.after_train) into runs/table4/fr_<init>_<regime>/metrics.json;
# a finished or interrupted run resumes from its last.pth when the script is run again.
# Epochs per regime: App. A.2 gives "between 18 and 54 epochs depending on the data regime";
# we use 18 (100 %), 36 (10 %), 54 (2 %). One subset per regime, drawn by the first run and reused
# by the others (App. A.3: "the same subset is used for all subsequent experiments").
# Compute: 12 CosFace runs of a ResNet-50 on VGGFace2 (3.1M images at 100 %), 18-54 epochs, batch 512,
# on NGPU GPUs each (default 8, the paper's setting; NPROC is accepted as an older name); DRY_RUN=1 prints them.
set -euo pipefail
NGPU=${NGPU:-${NPROC:-8}}
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    DATA=$SYN FLICKR_CKPT=$SYN_CKPT VGGF_CKPT=$SYN_CKPT IMAGENET=$SYN_CKPT RUNS=${RUNS:-$SYN_RUNS/table4}
    EXTRA="$(tiny fr) ${EXTRA:-}"
fi
DATA=${DATA:?set DATA to the folder holding VGGFace2/, IJBB/ and IJBC/}
FLICKR_CKPT=${FLICKR_CKPT:?set FLICKR_CKPT to the Flickr-Face SwAV backbone}
VGGF_CKPT=${VGGF_CKPT:?set VGGF_CKPT to the VGGFace2 SwAV backbone}
RUNS=${RUNS:-runs/table4}
EXTRA=${EXTRA:-}
CONFIG=face_recognition/configs/vggface2.yaml

declare -A INIT=([scratch]=scratch [imagenet]=${IMAGENET:-imagenet} [flickr]="$FLICKR_CKPT" [vggf]="$VGGF_CKPT")
declare -A FRACTION=([100]=1.0 [10]=0.1 [2]=0.02)
declare -A EPOCHS=([100]=18 [10]=36 [2]=54)

for regime in 100 10 2; do
  subset=""
  for init in scratch imagenet flickr vggf; do
    out="$RUNS/fr_${init}_${regime}"
    # shellcheck disable=SC2086
    cell face_recognition "$CONFIG" vggface2 "$out" "${EPOCHS[$regime]}" \
      data.root="$DATA" model.init="${INIT[$init]}" data.fraction="${FRACTION[$regime]}" \
      ${subset:+data.subset_file="$subset"} $EXTRA
    if [[ "$regime" != 100 && -z "$subset" ]]; then subset="$out/subset.txt"; fi
  done
done

run $PY -m face_recognition.table4 --runs "$RUNS" --out "$RUNS/table4.md"
search_summary "$RUNS"
