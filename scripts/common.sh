# Sourced by scripts/tableN.sh and scripts/figN.sh: repository root, Python, launcher, --synthetic, DRY_RUN.
#
#   NGPU=N       GPUs (processes) per training run: N >= 2 -> LAUNCH="torchrun --nproc_per_node=N -m";
#                0 or 1 -> one process ("$PY -m"), on the GPU when there is one
#   LAUNCH=...   the launcher itself (wins over NGPU)
#   PY=...       the Python (default .venv/bin/python)
#   DRY_RUN=1    print each command ("+ cmd") instead of running it; required inputs are not checked
#   --synthetic  the same steps on the built-in synthetic benchmark at tiny scale (CPU): data from
#                `python -m common.synthetic --preset tiny` in SYN_DATA (default runs/synthetic/data),
#                runs under SYN_RUNS (default runs/synthetic), ResNet-18 and small crops (`tiny TASK`),
#                one epoch, and one tiny SwAV backbone (SYN_CKPT) standing in for every pre-trained init
#                (ImageNet, VGG-Face supervised, SwAV / MoCo on any face set; SYN_NO_BACKBONE=1 skips it).
#                It checks the plumbing; its numbers mean nothing.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
SYNTHETIC=0
for arg in "$@"; do
    case $arg in
        --synthetic) SYNTHETIC=1 ;;
        *) echo "$(basename "$0"): unknown argument $arg (the only option is --synthetic; the rest are env vars)" >&2
           exit 2 ;;
    esac
done
(( SYNTHETIC )) && NGPU=${SYN_NGPU:-0}
NGPU=${NGPU:-0}
if [[ -z ${LAUNCH:-} ]]; then
    if (( NGPU > 1 )); then LAUNCH="torchrun --nproc_per_node=$NGPU -m"; else LAUNCH="$PY -m"; fi
fi

run() {  # a command, or under DRY_RUN=1 its words shell-quoted after "+" (copy-pasteable)
    if [[ ${DRY_RUN:-0} == 1 ]]; then printf '+'; printf ' %q' "$@"; echo; else "$@"; fi
}

need() {  # FILE WHAT VAR: stop with one clear line when a required input is missing
    [[ -f $1 || ${DRY_RUN:-0} == 1 ]] || { echo "missing $2: $1 (set $3)" >&2; exit 1; }
}

tiny() {  # TASK: overrides that shrink a paper config to the synthetic CPU scale (the TASK/configs/synthetic.yaml sizes)
    case $1 in
        landmarks) echo "model.arch=resnet18 data.input_size=64 data.heatmap_size=16 data.sigma=2.0 optim.lr=3e-3" \
                        "optim.batch_size=4 optim.schedule=constant data.num_workers=0 optim.epochs=1" ;;
        au) echo "model.arch=resnet18 data.input_size=64 optim.lr=1e-3 optim.batch_size=8 data.num_workers=0" \
                 "eval.batch_size=32 train.eval_every=1 optim.epochs=1 data.boxes=none" ;;
        emotion) echo "model.arch=resnet18 data.input_size=64 optim.lr=1e-3 optim.batch_size=8 data.num_workers=0" \
                      "eval.batch_size=32 optim.epochs=1" ;;
        r3d) echo "model.arch=resnet18 data.input_size=64 data.num_workers=0 model.factors=[4,4,4]" \
                  "model.spiral_length=[9,9,9,9] model.dilation=[1,1,1,1] model.channels=[32,16,8] optim.name=adam" \
                  "optim.lr=2e-3 optim.weight_decay=0.0 optim.batch_size=8 eval.batch_size=8 optim.epochs=1" ;;
        fr) echo "model.arch=resnet18 data.size=48 model.embedding_dim=64 loss.scale=16.0 optim.batch_size=8" \
                 "optim.lr=0.01 optim.lr_batch=8 optim.warmup_epochs=0 amp=\"off\" data.num_workers=0" \
                 "eval.batch_size=32 optim.epochs=1" ;;
        pretrain) echo "optim.epochs=1" ;;
        *) echo "tiny: unknown task $1" >&2; return 1 ;;
    esac
}

if (( SYNTHETIC )); then
    SYN=${SYN_DATA:-runs/synthetic/data}
    SYN_RUNS=${SYN_RUNS:-runs/synthetic}
    SYN_CKPT=$SYN_RUNS/pretrain/swav_tiny/backbone.pth
    [[ -f $SYN/manifest.json ]] || run $PY -m common.synthetic --out "$SYN" --preset tiny --seed 0
    [[ -f $SYN_CKPT || ${SYN_NO_BACKBONE:-0} == 1 ]] || run $PY -m pretrain.train --config pretrain/configs/synthetic.yaml \
        data.root="$SYN/unlabelled" out="$SYN_RUNS/pretrain/swav_tiny" optim.epochs=1
fi

# ---- per-data-point search (paper §3.3: the search "is repeated for each data point") ----
# SEARCH=1 (the default on real data; 0 under --synthetic) makes every table cell a scripts/sweep.py run: it holds
# out a validation part of the cell's own training data (by subject / identity / source image; never a test
# split), trains the grid on the rest, and retrains the best setting on the whole data point into the cell's
# folder (its metrics.json as without search; the choice in search.json, collected by scripts/search_table.py).
#   SEARCH_GRID="lr=a,b,epochs=c,d,backbone_lr_mult=e,f"   the grid of every cell (default: search_grid below)
#   SEARCH_IMG_PER_S=1000   training images/s per GPU assumed by the DRY_RUN estimate (ResNet-50, bf16, A100)
#   DRY_RUN=1 prints each cell's sweep and, at the end, the number of training runs and the GPU-hours.
SEARCH=${SEARCH:-$(( SYNTHETIC ? 0 : 1 ))}
SEARCH_TALLY=$(mktemp)
trap 'rm -f "$SEARCH_TALLY"' EXIT
# Training images at 100 % (the sizes the GPU-hour estimate scales): 300W, WFLW, AFLW-19 train splits; DISFA
# ~2/3 of 27 x 4,845 frames per fold; BP4D FERA2015 train; AffectNet manually annotated train; 300W-LP; VGGFace2.
declare -A TRAIN_IMAGES=([landmarks:300w]=3148 [landmarks:wflw]=7500 [landmarks:aflw19]=20000
                         [au_intensity:disfa]=87210 [au_intensity:bp4d]=75586 [emotion:affectnet]=287651
                         [reconstruction3d:300wlp]=122450 [face_recognition:vggface2]=3141890)

search_grid() {  # TASK EPOCHS: the default grid of a cell (scripts/sweep_tasks.py default_grid)
    $PY scripts/sweep_tasks.py "$1" "$2"
}

cell() {  # TASK CONFIG DATASET OUT EPOCHS KEY=VALUE...: one table cell, searched (SEARCH=1) or at the config's setting
    local task=$1 config=$2 dataset=$3 out=$4 epochs=$5
    shift 5
    [[ -f $out/metrics.json ]] && { echo "done: $out"; return; }
    if (( ! SEARCH )); then
        run $LAUNCH "$task.train" --config "$config" optim.epochs="$epochs" out="$out" "$@"
        return
    fi
    local grid=${SEARCH_GRID:-$(search_grid "$task" "$epochs")} gpus=1
    (( NGPU > 1 )) && gpus=$NGPU
    [[ ${DRY_RUN:-0} == 1 ]] && $PY scripts/sweep.py --task "$task" --config "$config" --grid "$grid" --out "$out.search" \
        --count --images "${TRAIN_IMAGES[$task:$dataset]:-0}" --img-per-s "${SEARCH_IMG_PER_S:-1000}" --gpus $gpus \
        "$@" >> "$SEARCH_TALLY"
    run $PY scripts/sweep.py --task "$task" --config "$config" --grid "$grid" --out "$out.search" --final-out "$out" \
        --launch "$LAUNCH" "$@"
}

search_summary() {  # RUNS: after a table's cells: the DRY_RUN totals, or the side table of chosen settings
    if [[ ${DRY_RUN:-0} == 1 && -s $SEARCH_TALLY ]]; then
        $PY - "$SEARCH_TALLY" "${SEARCH_IMG_PER_S:-1000}" <<'PY'
import json, sys
cells = [json.loads(line) for line in open(sys.argv[1])]
runs, epochs, hours = (sum(c[k] for c in cells) for k in ("runs", "epochs", "gpu_hours"))
print(f"search: {len(cells)} cells, {runs} training runs, {epochs} epochs, ~{hours:.0f} GPU-hours "
      f"at {sys.argv[2]} images/s per GPU")
PY
    elif (( SEARCH )); then
        run $PY scripts/search_table.py --runs "$1" --out "$1/search.md"
    fi
}
