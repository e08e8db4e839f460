"""Plan a SwAV pre-training run (paper App. A.1: 200 epochs, batch 4096 on 64 GPUs): iterations,
wall time, learning rate, queue and prototype freezing for a given image count and GPU count.

    python -m pretrain.plan --images 3310000 --epochs 200 --gpus 64
    python -m pretrain.plan --images 3310000 --epochs 200 --gpus 8 --throughput-json bench.json

Rules (shared/research/anchors_frl_swav.md §1.7, §2.4, §2.9, §2.15):
- global batch B = GPUs x batch per GPU (paper: 64 x 64 = 4096).
- B >= 4096, the paper's recipe: LARS lr 4.8 x B / 4096 (linear scaling), cosine toward
  0.045 x B / 4096 (App. A.1), 10 warm-up epochs from 0.3 x B / 4096, no queue.
- B < 4096, SwAV's small-batch recipe (bs256: lr 0.6 = 2x the linear scaling of 4.8, final lr
  lr / 1000, no warm-up): lr = min(4.8, 2 x 4.8 x B / 4096), and a queue so that Sinkhorn sees at
  least 4096 samples per step (queue + batch; SwAV: 3840 + 256), rounded up to whole global
  batches, started at 15 / 200 of the schedule (SwAV bs256: epoch 15 of 200).
- prototypes frozen for one ImageNet epoch of images, 1,281,167 / B iterations (SwAV: 313 at
  4096, 5005 at 256; the configs keep these values).
- throughput: images per second per GPU measured by bench/pretrain_step.py (--throughput-json:
  a JSON object with "img_per_s_per_gpu", optional "batch_per_gpu" and "device"), or --img-per-s,
  or SwAV's published V100 rates (ImageNet epoch 3 min 40 s on 64 GPUs: 91 img/s per GPU; 52 min
  10 s on 4 GPUs: 102 img/s per GPU), V100 figures, well below current GPUs.
"""
import argparse
import json
import math

IMAGENET_IMAGES = 1_281_167  # SwAV's freeze_prototypes_niters is one ImageNet epoch (313 x 4096)
SINKHORN_COLUMNS = 4096  # samples per Sinkhorn step in the paper's recipe (batch 4096, no queue)
PAPER_BATCH, PAPER_LR, PAPER_FINAL_LR, PAPER_WARMUP_START = 4096, 4.8, 0.045, 0.3
SWAV_RATE_MULTI_NODE = IMAGENET_IMAGES / 220 / 64  # 3 min 40 s per epoch, 64 V100
SWAV_RATE_ONE_NODE = IMAGENET_IMAGES / 3130 / 4  # 52 min 10 s per epoch, 4 V100


def read_throughput(path: str) -> dict:
    """{"img_per_s_per_gpu": float, "batch_per_gpu": int or None, "device": str} from a JSON file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"throughput file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    rate = data.get("img_per_s_per_gpu") if isinstance(data, dict) else None
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
        raise ValueError(f"{path}: expected a JSON object with a positive number \"img_per_s_per_gpu\"")
    return {"img_per_s_per_gpu": float(rate), "batch_per_gpu": data.get("batch_per_gpu"),
            "device": str(data.get("device", "measured"))}


def plan(*, images: int, epochs: int, gpus: int, batch_per_gpu: int = 64, img_per_s_per_gpu=None,
         source: str = "", gpus_per_node: int = 8, image_kb: float = 25.0, checkpoint_minutes: float = 20.0) -> dict:
    """The recipe and its cost as a dict (see the module docstring for the rules)."""
    if min(images, epochs, gpus, batch_per_gpu) < 1:
        raise ValueError("--images, --epochs, --gpus and --batch-per-gpu must be positive")
    batch = gpus * batch_per_gpu
    ipe = images // batch
    if ipe < 1:
        raise ValueError(f"{images} images are fewer than one global batch of {batch}")
    scale = batch / PAPER_BATCH
    if batch >= PAPER_BATCH:
        lr, final_lr, warmup, warmup_start = PAPER_LR * scale, PAPER_FINAL_LR * scale, 10, PAPER_WARMUP_START * scale
        queue, queue_start, recipe = 0, 0, "paper App. A.1 (batch >= 4096: linear lr scaling, no queue)"
    else:
        lr = min(PAPER_LR, 2 * PAPER_LR * scale)
        final_lr, warmup, warmup_start = lr / 1000, 0, 0.0
        queue = math.ceil((SINKHORN_COLUMNS - batch) / batch) * batch
        queue_start = max(1, round(15 * epochs / 200))
        recipe = "SwAV bs256 (batch < 4096: 2x linear lr, queue, no warm-up)"
    if img_per_s_per_gpu is None:
        nodes = math.ceil(gpus / gpus_per_node)
        img_per_s_per_gpu = SWAV_RATE_MULTI_NODE if nodes > 1 else SWAV_RATE_ONE_NODE
        source = f"SwAV README V100 rate ({'64 GPUs' if nodes > 1 else '4 GPUs'}); measure with bench/pretrain_step.py"
    rate = img_per_s_per_gpu * gpus
    iterations = ipe * epochs
    seconds = iterations * batch / rate
    return {
        "recipe": recipe, "images": images, "epochs": epochs, "gpus": gpus, "nodes": math.ceil(gpus / gpus_per_node),
        "gpus_per_node": min(gpus, gpus_per_node), "batch_per_gpu": batch_per_gpu, "batch": batch,
        "iters_per_epoch": ipe, "iterations": iterations, "dropped_per_epoch": images - ipe * batch,
        "lr": lr, "final_lr": final_lr, "warmup_epochs": warmup, "warmup_start_lr": warmup_start,
        "queue_length": queue, "queue_start_epoch": queue_start, "sinkhorn_columns": batch + queue,
        "freeze_prototypes_iters": round(IMAGENET_IMAGES / batch),
        "img_per_s_per_gpu": img_per_s_per_gpu, "throughput_source": source or "given", "img_per_s": rate,
        "hours": seconds / 3600, "epoch_minutes": seconds / epochs / 60, "read_mb_per_s": rate * image_kb / 1000,
        "image_kb": image_kb, "shards_1gb": math.ceil(images * image_kb / 1e6),
        "checkpoint_every_iters": max(1, round(checkpoint_minutes * 60 * rate / batch)),
        "checkpoint_minutes": checkpoint_minutes,
    }


def overrides(p: dict) -> str:
    """The pretrain.train overrides that implement plan ``p`` on top of swav_r50.yaml."""
    return (f"data.batch_size={p['batch']} optim.epochs={p['epochs']} optim.lr={p['lr']:.4g} "
            f"optim.final_lr={p['final_lr']:.4g} optim.warmup_epochs={p['warmup_epochs']} "
            f"optim.warmup_start_lr={p['warmup_start_lr']:.4g} swav.queue_length={p['queue_length']} "
            f"swav.queue_start_epoch={p['queue_start_epoch']} "
            f"swav.freeze_prototypes_iters={p['freeze_prototypes_iters']} "
            f"checkpoint_every_iters={p['checkpoint_every_iters']}")


def format_plan(p: dict) -> str:
    queue = (f"{p['queue_length']} from epoch {p['queue_start_epoch']} (Sinkhorn sees {p['sinkhorn_columns']} "
             f"samples per step)" if p["queue_length"] else f"none (Sinkhorn sees the batch, {p['batch']} samples)")
    rows = [
        ("recipe", p["recipe"]),
        ("images", f"{p['images']:,} ({p['dropped_per_epoch']} left out per epoch: the incomplete last batch)"),
        ("GPUs", f"{p['gpus']} ({p['nodes']} node{'s' if p['nodes'] > 1 else ''} x {p['gpus_per_node']})"),
        ("batch", f"{p['batch_per_gpu']} per GPU -> global {p['batch']}"),
        ("iterations", f"{p['iters_per_epoch']:,} per epoch x {p['epochs']} epochs = {p['iterations']:,}"),
        ("learning rate", f"LARS {p['lr']:.4g}, cosine to {p['final_lr']:.4g}, "
                          + (f"warm-up {p['warmup_epochs']} epochs from {p['warmup_start_lr']:.4g}"
                             if p["warmup_epochs"] else "no warm-up")),
        ("queue", queue),
        ("prototypes frozen", f"{p['freeze_prototypes_iters']:,} iterations (one ImageNet epoch of images)"),
        ("throughput", f"{p['img_per_s_per_gpu']:.0f} img/s per GPU ({p['throughput_source']}) -> "
                       f"{p['img_per_s']:,.0f} img/s"),
        ("wall time", f"{p['hours']:.1f} h ({p['hours'] / 24:.2f} days), {p['epoch_minutes']:.1f} min per epoch, "
                      f"without evaluation and restarts"),
        ("data", f"{p['read_mb_per_s']:.0f} MB/s at {p['image_kb']:g} KB per image, ~{p['shards_1gb']} shards of 1 GB"),
        ("checkpoints", f"every {p['checkpoint_every_iters']:,} iterations (~{p['checkpoint_minutes']:g} min)"),
        ("overrides", overrides(p)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Plan a SwAV pre-training run: time, iterations, lr, queue.")
    parser.add_argument("--images", type=int, required=True, help="number of training images")
    parser.add_argument("--epochs", type=int, default=200, help="epochs (paper: 200)")
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs (processes)")
    parser.add_argument("--batch-per-gpu", type=int, default=None, help="per-GPU batch (default: the "
                        "throughput file's, else 64 as in the paper)")
    parser.add_argument("--img-per-s", type=float, default=None, help="measured images/s per GPU")
    parser.add_argument("--throughput-json", default=None, help='JSON with "img_per_s_per_gpu" (bench/pretrain_step.py)')
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--image-kb", type=float, default=25.0, help="mean stored image size in KB (256 px JPEG crops)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON line instead")
    args = parser.parse_args(argv)
    rate, source, batch_per_gpu = args.img_per_s, "--img-per-s" if args.img_per_s else "", args.batch_per_gpu
    try:
        if args.throughput_json:
            measured = read_throughput(args.throughput_json)
            rate = rate or measured["img_per_s_per_gpu"]
            source = source or f"{measured['device']}, {args.throughput_json}"
            batch_per_gpu = batch_per_gpu or measured["batch_per_gpu"]
        p = plan(images=args.images, epochs=args.epochs, gpus=args.gpus, batch_per_gpu=batch_per_gpu or 64,
                 img_per_s_per_gpu=rate, source=source, gpus_per_node=args.gpus_per_node, image_kb=args.image_kb)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"pretrain.plan: {e}") from None
    print(json.dumps(p) if args.json else format_plan(p))


if __name__ == "__main__":
    main()
