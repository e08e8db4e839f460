#!/usr/bin/env bash
# Paper Table 10 (App. D): per-AU ICC on DISFA (3 subject folds, pooled) of Ours (VGG-F) fine-tuned on
# 1 % of the frames, beside KBSS / KJRE / CLFL / SSCFL; also at 2 % and 6 %, those methods' label amounts.
#
#   DISFA=/data/DISFA VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table10.sh
#
# The 1 % runs are Table 7's (same folders under RUNS, skipped when done). LAUNCH, EXTRA: see table7.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LAUNCH=${LAUNCH:-"$PY -m"}
DISFA=${DISFA:-data/DISFA}
RUNS=${RUNS:-runs/au}
EXTRA=${EXTRA:-}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
[[ -f $INIT ]] || { echo "missing Ours (VGG-F) checkpoint: $INIT (set VGGF_CKPT)" >&2; exit 1; }

for frac in 0.01 0.02 0.06; do
    dir=$RUNS/disfa_vggf_ours_finetune_$frac
    for fold in 0 1 2; do
        [[ -f $dir/f$fold/metrics.json ]] || $LAUNCH au_intensity.train --config au_intensity/configs/disfa.yaml \
            data.root=$DISFA data.fold=$fold data.fraction=$frac model.init=$INIT optim.epochs=320 \
            out=$dir/f$fold $EXTRA
    done
    $PY -m au_intensity.eval --config au_intensity/configs/disfa.yaml --out $dir --pool $dir/f0 $dir/f1 $dir/f2
done
$PY -m au_intensity.tables --table 10 --runs $RUNS
