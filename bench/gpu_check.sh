#!/usr/bin/env bash
# GPU check of the performance work (issue 12), about 3-5 minutes on one CUDA GPU:
#   1. bench/multicrop.py      augmentation images/s per CPU core (PIL reference vs ours), and
#                              DeviceAugment (colour / grey / blur batched on the GPU) images/s;
#   2. bench/pretrain_step.py  SwAV ResNet-50 step: per-crop reference, grouped, grouped +
#                              channels_last + bf16 (images/s, MFU against a bf16 matmul);
#   3. bench/ijb_scoring.py    IJB-C 1:1 scoring at 10 % of its size (ours vs insightface scheme);
#   4. a 50-iteration SwAV run (pretrain.train, swav_r50.yaml: fast data path with the colour on the
#      GPU, bf16, channels_last, workers from the CPU count) on rendered 256 px faces;
# then one summary table. CI never runs it. Without CUDA it refuses (exit 2).
#   bash bench/gpu_check.sh [OUT_DIR]          (PY=python to use another interpreter)
# GPU_CHECK_ON_CPU=1 runs the same plumbing with tiny sizes on the CPU (no measurement; for testing
# this script on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD FACEREP_PROGRESS=0

if [[ "${GPU_CHECK_ON_CPU:-0}" == 1 ]]; then
  echo "GPU_CHECK_ON_CPU=1: tiny sizes on the CPU, to test this script; the numbers mean nothing" >&2
  DEV=cpu
  MC_ARGS=(--n 8 --rounds 1 --batch 16)
  STEP_ARGS=(--arch resnet18 --sizes 32 16 --counts 2 2 --batch 4 --steps 1 --warmup 0 --prototypes 64 --hidden-dim 64)
  IJB_SCALE=0.005
  SWAV_BS=8; SWAV_ITERS=5
  SWAV_ARGS=(model.arch=resnet18 "aug.crop_sizes=[32,16]" swav.n_prototypes=64 model.hidden_dim=64 data.num_workers=1)
else
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu_check.sh: no CUDA device (torch.cuda.is_available() is False). This check measures" >&2
    echo "GPU throughput and refuses to run on the CPU. CPU benchmarks: python bench/multicrop.py," >&2
    echo "python bench/pretrain_step.py, python bench/ijb_scoring.py (bench/README.md)." >&2
    exit 2
  fi
  DEV=cuda
  MC_ARGS=(--n 64 --rounds 3 --batch 256)
  STEP_ARGS=(--channels-last --bf16)
  IJB_SCALE=0.1
  SWAV_BS=64; SWAV_ITERS=50
  SWAV_ARGS=()
fi
OUT=${1:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
echo "gpu_check: results in $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

echo "== 1/4 multi-crop augmentation"
timeout 240 "$PY" bench/multicrop.py "${MC_ARGS[@]}" --device "$DEV" --save-dir "$OUT/faces" \
  --json "$OUT/multicrop.json" | tee "$OUT/multicrop.txt"

echo "== 2/4 SwAV training step"
timeout 240 "$PY" bench/pretrain_step.py --device "$DEV" ${STEP_ARGS[@]+"${STEP_ARGS[@]}"} --json "$OUT/step.json" \
  | tee "$OUT/step.txt"

echo "== 3/4 IJB-C scoring (scale $IJB_SCALE)"
timeout 240 "$PY" bench/ijb_scoring.py --scale "$IJB_SCALE" | tee "$OUT/ijb.txt"

echo "== 4/4 SwAV pre-training, $SWAV_ITERS iterations of batch $SWAV_BS"
"$PY" - "$OUT" "$SWAV_BS" "$SWAV_ITERS" <<'EOF'
import glob, os, sys
out, bs, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
faces = sorted(glob.glob(os.path.join(out, "faces", "*.jpg")))
with open(os.path.join(out, "swav_list.txt"), "w") as f:  # one epoch = iters batches
    f.write("\n".join((faces * (bs * iters // len(faces) + 1))[: bs * iters]) + "\n")
EOF
rm -rf "$OUT/swav"
timeout 300 "$PY" -m pretrain.train --config pretrain/configs/swav_r50.yaml "data.root=$OUT/swav_list.txt" \
  "out=$OUT/swav" "data.batch_size=$SWAV_BS" optim.epochs=1 optim.warmup_epochs=0 optim.lr=0.6 \
  optim.final_lr=0.0006 swav.freeze_prototypes_iters=10 checkpoint_every_iters=0 log_every_iters=1 \
  export_at_end=false ${SWAV_ARGS[@]+"${SWAV_ARGS[@]}"} 2>&1 | tail -n 5 | tee "$OUT/swav.txt"

echo "== summary"
"$PY" - "$OUT" <<'EOF'
import json, math, os, re, sys
out = sys.argv[1]
mc = json.load(open(os.path.join(out, "multicrop.json")))
step = json.load(open(os.path.join(out, "step.json")))
ijb = re.search(r"speed-up: ([0-9.]+)x", open(os.path.join(out, "ijb.txt")).read())
logs = [json.loads(line) for line in open(os.path.join(out, "swav", "log.jsonl"))]
epoch = [r for r in logs if "time_s" in r][-1]
losses = [r["loss"] for r in logs if "step" in r and "loss" in r]
rows = [(f"augmentation: {r['pipeline']}", f"{r['images_per_s_per_core']:.1f} images/s per core",
         f"{r['ratio']:.2f}x reference") for r in mc["rows"]]
if mc["device"]:
    d = mc["device"]
    rows.append((f"augmentation: DeviceAugment on {mc['device_name']} (batch {d['batch']})",
                 f"{d['device_images_per_s']:.0f} images/s", f"host {d['host_cpu_ms_per_image']:.3f} ms/image"))
for r in step["rows"]:
    ratio = f", {r['ratio']:.2f}x per-crop" if r.get("ratio") else ""
    rows.append((f"SwAV step {step['arch']} b{step['batch']} ({step['crops']}): {r['variant']}",
                 f"{r['images_per_s']:.0f} images/s", f"MFU {100 * r['mfu']:.1f} % ({r['dtype']}){ratio}"))
rows.append(("IJB-C scoring (ours vs insightface scheme)", f"{ijb.group(1) if ijb else '?'}x faster", "TARs identical"))
ok = epoch["skipped"] == 0 and all(math.isfinite(v) for v in losses)
rows.append((f"SwAV run: {len(losses)} logged steps, {epoch['images']} images",
             f"{epoch['images'] / epoch['time_s']:.0f} images/s incl. start-up",
             f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {'OK' if ok else 'FAILED'}"))
print(f"device {step['device']}; load average {mc['loadavg'][0]:.2f} on {mc['cpus']} CPUs")
print("| check | throughput | note |\n|---|---:|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
sys.exit(0 if ok else 1)
EOF
