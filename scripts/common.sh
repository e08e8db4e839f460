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

run() {  # a command, or its echo under DRY_RUN=1
    if [[ ${DRY_RUN:-0} == 1 ]]; then echo "+ $*"; else "$@"; fi
}

need() {  # FILE WHAT VAR: stop with one clear line when a required input is missing
    [[ -f $1 || ${DRY_RUN:-0} == 1 ]] || { echo "missing $2: $1 (set $3)" >&2; exit 1; }
}

tiny() {  # TASK: overrides that shrink a paper config to the synthetic CPU scale (the TASK/configs/synthetic.yaml sizes)
    case $1 in
        landmarks) echo "model.arch=resnet18 data.input_size=64 data.heatmap_size=16 data.sigma=2.0 optim.lr=3e-3" \
                        "optim.batch_size=4 optim.schedule=constant data.num_workers=0 optim.epochs=1" ;;
        au) echo "model.arch=resnet18 data.input_size=64 optim.lr=1e-3 optim.batch_size=8 data.num_workers=0" \
                 "eval.batch_size=32 train.eval_every=1 optim.epochs=1" ;;
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
