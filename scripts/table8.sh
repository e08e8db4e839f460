#!/usr/bin/env bash
# Paper Table 8 (§5.3): per-AU ICC on BP4D (FERA2015 train -> devel) of Ours (VGG-F) fine-tuned on 1 %
# of the frames, beside KBSS / KJRE / CLFL / SSCFL; also at 2 % and 6 %, those methods' label amounts.
# Table 11 (App. D) prints the same numbers again: scripts/table11.sh reuses these runs.
#
#   BP4D=/data/BP4D VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table8.sh
#
# The 1 % run is Table 7's (same folder under RUNS, skipped when done). LAUNCH, EXTRA: see table7.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LAUNCH=${LAUNCH:-"$PY -m"}
BP4D=${BP4D:-data/BP4D}
RUNS=${RUNS:-runs/au}
EXTRA=${EXTRA:-}
TABLE=${TABLE:-8}
INIT=${VGGF_CKPT:-runs/swav_vggface2/backbone.pth}
[[ -f $INIT ]] || { echo "missing Ours (VGG-F) checkpoint: $INIT (set VGGF_CKPT)" >&2; exit 1; }

for frac in 0.01 0.02 0.06; do
    dir=$RUNS/bp4d_vggf_ours_finetune_$frac
    [[ -f $dir/metrics.json ]] || $LAUNCH au_intensity.train --config au_intensity/configs/bp4d.yaml \
        data.root=$BP4D data.fraction=$frac model.init=$INIT optim.epochs=320 out=$dir $EXTRA
done
$PY -m au_intensity.tables --table $TABLE --runs $RUNS
