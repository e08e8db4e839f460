#!/usr/bin/env bash
# Paper Fig. 5 (App. C): distribution of face sizes in the uncurated Flickr-Face set. The detect-and-crop
# step of pretrain/curate (crop.py) records every kept face's box and writes the histogram itself:
# OUT/face_sizes.png + face_sizes.json (face size = the longer side of the detector box, in source pixels).
#
#   FLICKR_IMAGES=data/flickr_raw/images OUT=data/flickr_crops bash scripts/fig5.sh
#   bash scripts/fig5.sh --synthetic        # the built-in synthetic 300W photos stand in for Flickr (CPU)
#
# FLICKR_IMAGES is the download folder of `python -m pretrain.curate.flickr` (pretrain/curate/README.md).
# Images already in OUT/manifest.jsonl are skipped, so after the curation run this only redraws the figure.
# Env: FLICKR_IMAGES, OUT, DETECTOR (mtcnn | retinaface; the paper uses RetinaFace [18]), WEIGHTS (RetinaFace
# Resnet50_Final.pth, or an MTCNN weight folder), DEVICE (cpu | cuda), CROP_ARGS (more crop.py flags), DRY_RUN=1.
# MTCNN's weights come from the facenet-pytorch wheel (`python -m pretrain.curate.detector --fetch-mtcnn`).
# Compute: detection on every downloaded photo (1.79M faces kept in the paper): one GPU for about a day
# with RetinaFace-R50 at --max-side 1280 [our estimate]; the histogram itself takes seconds.
set -euo pipefail
SYN_NO_BACKBONE=1
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    FLICKR_IMAGES=$SYN/300W OUT=${OUT:-$SYN_RUNS/fig5} DETECTOR=${DETECTOR:-mtcnn}
fi
FLICKR_IMAGES=${FLICKR_IMAGES:-data/flickr_raw/images}
OUT=${OUT:-data/flickr_crops}
DETECTOR=${DETECTOR:-mtcnn}
DEVICE=${DEVICE:-cpu}
CROP_ARGS=${CROP_ARGS:-}
[[ -d $FLICKR_IMAGES || ${DRY_RUN:-0} == 1 ]] || { echo "missing Flickr images: $FLICKR_IMAGES (set FLICKR_IMAGES)" >&2; exit 1; }
if [[ $DETECTOR == mtcnn && -z ${WEIGHTS:-} && ! -f $HOME/.cache/facerep/mtcnn/onet.pt ]]; then
    run $PY -m pretrain.curate.detector --fetch-mtcnn
fi
run $PY -m pretrain.curate.crop --images "$FLICKR_IMAGES" --out "$OUT" --detector "$DETECTOR" \
    ${WEIGHTS:+--weights "$WEIGHTS"} --device "$DEVICE" $CROP_ARGS
echo "Fig. 5: $OUT/face_sizes.png ($OUT/face_sizes.json)"
