"""Benchmark of the SwAV training step (issue 12; paper §3.1, App. A.1): images/s and model FLOP
utilisation of a multi-crop ResNet step, against a single-crop-at-a-time step, in one run.

    python bench/pretrain_step.py [--device cpu|cuda] [--arch resnet50] [--batch 8] [--sizes 96 48]
                                  [--counts 2 4] [--steps 3] [--channels-last] [--bf16] [--compile]

A step is what pretrain/train.py does per iteration at world size 1: normalise the prototypes,
forward every crop, Sinkhorn codes of the two large crops, swapped-prediction loss, backward, LARS
update. Variants, each on a fresh model with the same weights and the same random crops:

- per-crop (reference): the straightforward step, one backbone call per crop (8 calls for SwAV's
  2 + 6 crops);
- grouped: crops of one resolution concatenated into one backbone call (SwAVModel, as SwAV does);
- grouped + channels_last / bf16 autocast / torch.compile (of the backbone), as asked by the flags;
  on CUDA the default adds grouped + channels_last + bf16, pretrain/configs' setting.

FLOPs of a step (forward + backward) are counted by torch.utils.flop_counter.FlopCounterMode; model
FLOP utilisation (MFU) = achieved FLOP/s / the FLOP/s of a large matmul measured here on the same
device and dtype (bf16 for bf16 rows; fp32 rows on CUDA with TF32 matmuls, as cuDNN's convolutions
use TF32 by default). CPU runs use one thread unless ``--threads``.
"""
import argparse
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.files import write_json  # noqa: E402
from common.optim import LARS  # noqa: E402
from pretrain.swav import swav_loss  # noqa: E402
from pretrain.train import build_model  # noqa: E402


class PerCrop(torch.nn.Module):
    """The reference forward: one call of ``model`` per crop, outputs concatenated crop-major."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, crops):
        outs = [self.model([c]) for c in crops]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device, dtype, n: int, reps: int) -> float:
    """FLOP/s of an n x n @ n x n matmul in ``dtype`` on ``device``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def make_step(model, forward, optimizer, amp_dtype, device):
    def step(crops):
        model.normalize_prototypes()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = swav_loss(forward, crops, None, prototypes=model.prototypes.weight, crops_for_assign=(0, 1),
                             temperature=0.1, epsilon=0.05, sinkhorn_iters=3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def run_variant(name: str, args, device) -> dict:
    per_crop, cl, bf16, compiled = name.startswith("per-crop"), "cl" in name, "bf16" in name, "compile" in name
    torch.manual_seed(0)
    model = build_model(method="swav", arch=args.arch, init="scratch", norm="batch", hidden_dim=args.hidden_dim,
                        out_dim=128, n_prototypes=args.prototypes).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    gen = torch.Generator().manual_seed(1)
    crops = [torch.randn(args.batch, 3, s, s, generator=gen).to(device, memory_format=fmt)
             for s, c in zip(args.sizes, args.counts) for _ in range(c)]
    optimizer = LARS(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
    amp_dtype = torch.bfloat16 if bf16 else None
    eager = make_step(model, PerCrop(model) if per_crop else model, optimizer, amp_dtype, device)
    with FlopCounterMode(display=False) as counter:
        eager(crops)
    flops = counter.get_total_flops()
    if compiled:
        model.backbone = torch.compile(model.backbone)
    step = make_step(model, PerCrop(model) if per_crop else model, optimizer, amp_dtype, device)
    for _ in range(args.warmup):
        step(crops)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(crops)
    _sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{name}: non-finite loss {loss.item()}")
    return {"variant": name, "images_per_s": args.batch / seconds, "ms_per_step": 1000 * seconds,
            "gflop_per_step": flops / 1e9, "tflops": flops / seconds / 1e12, "dtype": "bf16" if bf16 else "fp32"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=None, help="images per step (CPU 8, CUDA 64 = 4096 / 64 GPUs)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="crop sizes (CPU 96 48, CUDA 224 96)")
    parser.add_argument("--counts", type=int, nargs="+", default=None, help="crops per size (CPU 2 4, CUDA 2 6)")
    parser.add_argument("--prototypes", type=int, default=3000, help="SwAV K")
    parser.add_argument("--hidden-dim", type=int, default=2048, help="projection head width")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 3, CUDA 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CPU 1, CUDA 5)")
    parser.add_argument("--channels-last", action="store_true", help="add a grouped + channels_last variant")
    parser.add_argument("--bf16", action="store_true", help="add bf16 autocast to that variant")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (backbone) to that variant")
    parser.add_argument("--no-reference", action="store_true", help="skip the per-crop reference step")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--json", default="", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench/pretrain_step.py: --device cuda but torch.cuda.is_available() is False")
    defaults = dict(batch=(64, 8), sizes=([224, 96], [96, 48]), counts=([2, 6], [2, 4]), steps=(20, 3), warmup=(5, 1))
    for key, (gpu, cpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, gpu if cuda else cpu)
    if len(args.sizes) != len(args.counts):
        raise SystemExit(f"--sizes {args.sizes} and --counts {args.counts} differ in length")
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    variants = ([] if args.no_reference else ["per-crop"]) + ["grouped"]
    extra = "+".join(["grouped"] + [f for f, on in (("cl", args.channels_last), ("bf16", args.bf16),
                                                      ("compile", args.compile)) if on])
    if extra != "grouped":
        variants.append(extra)
    elif cuda:
        variants.append("grouped+cl+bf16")
    load0 = os.getloadavg()
    rows = [run_variant(v, args, device) for v in variants]
    n, reps = (8192, 20) if cuda else (1024, 5)
    peaks = {}
    for dtype in sorted({r["dtype"] for r in rows}):
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if cuda else precision)  # TF32 on CUDA, as cuDNN convs
        peaks[dtype] = matmul_flops(device, torch.bfloat16 if dtype == "bf16" else torch.float32, n, reps) / 1e12
        torch.set_float32_matmul_precision(precision)
    load1 = os.getloadavg()
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} thread(s)"
    crops = " + ".join(f"{c}x{s}" for s, c in zip(args.sizes, args.counts))
    print(f"SwAV step, {args.arch}, batch {args.batch}, crops {crops}, K {args.prototypes}, on {name}; "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f}")
    print("| variant | images/s | ms/step | GFLOP/step | achieved TFLOP/s | matmul TFLOP/s | MFU | vs per-crop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[0]["images_per_s"] if rows[0]["variant"] == "per-crop" else None
    for r in rows:
        r["peak_tflops"] = peaks[r["dtype"]]
        r["mfu"] = r["tflops"] / r["peak_tflops"]
        r["ratio"] = r["images_per_s"] / base if base else None
        ratio = f"{r['ratio']:.2f}x" if base else "-"
        print(f"| {r['variant']} | {r['images_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['gflop_per_step']:.1f} | "
              f"{r['tflops']:.3f} | {r['peak_tflops']:.3f} | {100 * r['mfu']:.1f} % | {ratio} |")
    if args.json:
        write_json(args.json, {"rows": rows, "device": name, "arch": args.arch, "batch": args.batch, "crops": crops,
                               "loadavg": [load0[0], load1[0]]})
    return rows


if __name__ == "__main__":
    main()
