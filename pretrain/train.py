"""SwAV / MoCo-v2 pre-training of a ResNet on face images (paper §3.1, App. A.1; MoCo-v2: Table 1).

    python -m pretrain.train --config pretrain/configs/swav_r50.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=8 -m pretrain.train --config pretrain/configs/swav_r50.yaml ...

data.batch_size is the global batch, split over the processes. A run resumes by itself from
OUT/last.pth (model, optimiser, lr position, SwAV queue / MoCo key encoder, scaler, RNG and the
position inside the epoch), which is written atomically every epoch and every
checkpoint_every_iters iterations. At the end the backbone is exported (pretrain/export.py).
data.root is image folders / list files, or shard folders written by pretrain.curate.shard
(pretrain/shards.py). SIGTERM / SIGUSR1 checkpoint at the next iteration boundary on all ranks and
exit with code 75 (pretrain/preempt.py; multi-node and SLURM: docs/multinode.md).
"""
import math
import os
import random
import time

import numpy as np
import torch
from torch import nn

from common import distributed as dist
from common.backbone import build_backbone
from common.checkpoint import make_state, restore, save_checkpoint, unwrap
from common.config import cli, git_sha, save_config
from common.logger import JsonlWriter, log, progress
from common.optim import LARS, cosine_schedule, set_lr
from pretrain.data import collate_skip_bad
from pretrain.export import export_backbone
from pretrain.fast_multicrop import build_transform, resolve_num_workers
from pretrain.knn import knn_probe
from pretrain.moco import MoCoModel, MomentumContrast, moco_loss
from pretrain.preempt import StopRequest, ignore_stop_signals
from pretrain.shards import open_pretrain_data
from pretrain.swav import CollapseMonitor, EmbeddingQueue, SwAVModel, check_epsilon, swav_loss

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def replace_batchnorm(module: nn.Module, max_groups: int = 32) -> nn.Module:
    """Swap every BatchNorm for GroupNorm(gcd(max_groups, C), C), in place (model.norm=group).
    GroupNorm does not depend on the batch, so runs on 1 and N CPU processes (where
    SyncBatchNorm does not exist) compute the same thing; used to test the distributed path."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(max_groups, c), c))
        else:
            replace_batchnorm(child, max_groups)
    return module


def build_model(*, method: str, arch: str, init: str, norm: str, hidden_dim: int, out_dim: int,
                n_prototypes: int) -> nn.Module:
    backbone = build_backbone(arch, init)
    if method == "swav":
        model = SwAVModel(backbone, hidden_dim=hidden_dim, out_dim=out_dim, n_prototypes=n_prototypes)
    elif method == "moco":
        model = MoCoModel(backbone, hidden_dim=hidden_dim, out_dim=out_dim)
    else:
        raise ValueError(f"method={method!r}: expected 'swav' or 'moco'")
    if norm not in ("batch", "group"):
        raise ValueError(f"model.norm={norm!r}: expected 'batch' or 'group'")
    return replace_batchnorm(model) if norm == "group" else model


def backward_step(model, optimizer, scaler, loss, *, freeze_prototypes: bool) -> None:
    """Backward and optimiser step; with ``freeze_prototypes`` the prototypes' gradient is
    dropped, so the optimiser skips them entirely (no momentum, no weight decay), as SwAV does
    for its first iterations (anchors §2.5)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if freeze_prototypes:
        unwrap(model).prototypes.weight.grad = None
    scaler.step(optimizer)
    scaler.update()


def train_one_epoch(cfg, *, model, loss_fn, loader, optimizer, scaler, lrs, epoch, start_iter,
                    iters_per_epoch, device, amp_dtype, writer, save, monitor, stop=None, device_aug=None) -> dict:
    """One epoch from batch ``start_iter``; returns the epoch's mean loss, images and skipped files.
    ``device_aug`` (pretrain.fast_multicrop.DeviceAugment) finishes the augmentation on the device.
    With a ``stop`` request (pretrain.preempt) pending on any rank, checkpoints and exits (code 75)."""
    model.train()
    world = dist.get_world_size()
    loss_sum, n_images, n_skipped = 0.0, 0.0, 0
    fmt = torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    batches = progress(loader, desc=f"epoch {epoch}", total=iters_per_epoch - start_iter)
    for it, (crops, n_bad) in enumerate(batches, start=start_iter):
        step = epoch * iters_per_epoch + it
        set_lr(optimizer, float(lrs[step]))  # a Python float: checkpoints hold plain data only
        n_skipped += n_bad
        n_local = 0 if crops is None else crops[0].shape[0]
        counts = dist.all_reduce_sum(torch.tensor([n_local, float(n_local == 0)], device=device))
        if counts[1] > 0:  # some process has no readable image: every process skips the step
            log(f"step {step}: a batch held only unreadable images; step skipped")
        else:
            crops = (device_aug(crops, device, fmt) if device_aug is not None
                     else [c.to(device, non_blocking=True, memory_format=fmt) for c in crops])
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(crops)
            n_global = counts[0].item()
            total = dist.all_reduce_sum(loss.detach().float() * n_local).item()
            if not math.isfinite(total):
                raise FloatingPointError(f"non-finite loss {total} at step {step} (epoch {epoch}, "
                                         f"iteration {it}); last good checkpoint: {cfg.out}/last.pth")
            # DDP averages gradients over processes: weight each by its share of the global batch
            backward_step(model, optimizer, scaler, loss * (n_local * world / n_global),
                          freeze_prototypes=cfg.method == "swav" and step < cfg.swav.freeze_prototypes_iters)
            loss_sum, n_images = loss_sum + total, n_images + n_global
            if (step + 1) % cfg.log_every_iters == 0:
                writer.write({"step": step, "epoch": epoch, "iter": it, "loss": total / n_global,
                              "lr": float(lrs[step])})
            warning = monitor.update(total / n_global) if monitor else None
            if warning:
                log("WARNING:", warning)
                writer.write({"step": step, "warning": warning})
        stopping = stop is not None and it + 1 < iters_per_epoch and stop.requested(device)  # epoch ends: main()
        if it + 1 < iters_per_epoch and (stopping or cfg.checkpoint_every_iters
                                         and (step + 1) % cfg.checkpoint_every_iters == 0):
            save(step + 1)
        if stopping:
            stop.exit(step + 1, os.path.join(cfg.out, "last.pth"), writer)
    skipped = int(dist.all_reduce_sum(torch.tensor([n_skipped], device=device)).item())
    return {"loss": loss_sum / max(n_images, 1), "images": int(n_images), "skipped": skipped}


def main(cfg):
    info = dist.init()
    device, world = info.device, info.world_size
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: identical initial weights
    torch.backends.cudnn.benchmark = True
    cfg["out"] = cfg.out or os.path.join("runs", cfg.name)
    last = os.path.join(cfg.out, "last.pth")
    if dist.is_main():
        save_config(cfg, cfg.out)
    writer = JsonlWriter(os.path.join(cfg.out, "log.jsonl"))
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} (global) is not divisible by {world} processes")
    local_bs = cfg.data.batch_size // world

    transform, device_aug = build_transform(cfg.data.pipeline, sizes=cfg.aug.crop_sizes, counts=cfg.aug.crop_counts,
                                            scales=cfg.aug.crop_scales, color_strength=cfg.aug.color_strength,
                                            color_on=cfg.aug.color_on, device_type=device.type)
    workers = resolve_num_workers(cfg.data.num_workers)
    try:
        dataset, sampler = open_pretrain_data(cfg.data.root, transform, batch_size=local_bs, rank=info.rank,
                                              world_size=world, seed=cfg.seed, shuffle_window=cfg.data.shuffle_window)
    except (FileNotFoundError, ValueError) as e:  # a missing / empty dataset: one line, no traceback
        raise SystemExit(f"pretrain.train: {e}") from None
    stop = StopRequest()  # SIGTERM / SIGUSR1: checkpoint at the next iteration boundary, exit 75
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=local_bs, sampler=sampler, drop_last=True, worker_init_fn=ignore_stop_signals,
        num_workers=workers, persistent_workers=workers > 0, collate_fn=collate_skip_bad,
        pin_memory=device.type == "cuda")
    ipe = sampler.iters_per_epoch
    log(f"pretrain {cfg.method} git {git_sha()}: {len(dataset)} images, global batch {cfg.data.batch_size} "
        f"({world} x {local_bs}), {ipe} iterations/epoch, device {device}, data {cfg.data.pipeline} "
        f"(colour on {'device' if device_aug else 'workers'}, {workers} workers), run {cfg.out}")

    model = build_model(method=cfg.method, arch=cfg.model.arch, init=cfg.model.init, norm=cfg.model.norm,
                        hidden_dim=cfg.model.hidden_dim, out_dim=cfg.model.out_dim,
                        n_prototypes=cfg.swav.n_prototypes).to(device)
    if cfg.model.sync_bn:
        model = dist.convert_sync_bn(model)  # App. A.1 "Synchronized Batch Normalization" (CUDA only)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    contrast, monitor, extra_state = None, None, {}
    if cfg.method == "moco":  # the key encoder copies the (SyncBN-converted) query encoder
        gen = torch.Generator().manual_seed(cfg.seed)
        contrast = MomentumContrast(model, queue_size=cfg.moco.queue_size, momentum=cfg.moco.momentum,
                                    temperature=cfg.moco.temperature, generator=gen)
        extra_state["moco"] = contrast
    else:
        check_epsilon(cfg.swav.epsilon)
        monitor = CollapseMonitor(cfg.swav.n_prototypes, tol=cfg.swav.collapse_tol,
                                  patience=cfg.swav.collapse_patience_iters)
    ddp = dist.wrap_ddp(model, info)

    if cfg.optim.name == "lars":
        optimizer = LARS(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                         weight_decay=cfg.optim.weight_decay)
    elif cfg.optim.name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                    weight_decay=cfg.optim.weight_decay)
    else:
        raise ValueError(f"optim.name={cfg.optim.name!r}: expected 'lars' or 'sgd'")
    lrs = cosine_schedule(cfg.optim.lr, cfg.optim.final_lr, cfg.optim.epochs, ipe,
                          warmup_epochs=cfg.optim.warmup_epochs, start_warmup_value=cfg.optim.warmup_start_lr)
    if cfg.amp not in AMP_DTYPES:
        raise ValueError(f"amp={cfg.amp!r}: expected one of {list(AMP_DTYPES)}")
    amp_dtype = AMP_DTYPES[cfg.amp] if device.type == "cuda" else None  # CPU runs stay float32
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start, queue_state = 0, None
    if os.path.isfile(last):
        extra = restore(last, model, optimizer, scaler if scaler.is_enabled() else None, **extra_state)
        if extra.get("iters_per_epoch") != ipe:
            raise ValueError(f"{last}: saved with {extra.get('iters_per_epoch')} iterations/epoch, now {ipe} "
                             f"(dataset, batch size or process count changed); use a new out= folder")
        start, queue_state = extra["iteration"], extra.get("queue")
        log(f"resumed from {last} at step {start} (epoch {start // ipe}, iteration {start % ipe})")
        writer.write({"event": "resume", "step": start})

    queue = None

    def save(step):
        queue_sd = queue.state_dict() if queue is not None else None  # collective: all ranks
        if dist.is_main():
            save_checkpoint(last, make_state(model, optimizer, scaler, epoch=step // ipe, iteration=step,
                                             config=cfg, queue=queue_sd, iters_per_epoch=ipe, **extra_state))

    for epoch in range(start // ipe, cfg.optim.epochs):
        start_iter = start % ipe if epoch == start // ipe else 0
        sampler.set_epoch(epoch, start_iter)
        swav_cfg = cfg.swav
        if cfg.method == "swav" and swav_cfg.queue_length > 0 and epoch >= swav_cfg.queue_start_epoch and queue is None:
            local_len = swav_cfg.queue_length // cfg.data.batch_size * local_bs  # a multiple of the batch
            if local_len < 1:
                raise ValueError(f"swav.queue_length={swav_cfg.queue_length} is shorter than one global batch")
            queue = EmbeddingQueue(len(swav_cfg.crops_for_assign), local_len, cfg.model.out_dim,
                                   device=device, rank=info.rank, world_size=world)
            if queue_state is not None and not queue.load_state_dict(queue_state):
                log("queue in the checkpoint has another shape or process count: starting empty")
            log(f"epoch {epoch}: SwAV queue of {local_len} embeddings per process")
        if cfg.method == "swav":
            protos = unwrap(model).prototypes.weight

            def loss_fn(crops):
                unwrap(model).normalize_prototypes()
                return swav_loss(ddp, crops, queue, prototypes=protos, crops_for_assign=swav_cfg.crops_for_assign,
                                 temperature=swav_cfg.temperature, epsilon=swav_cfg.epsilon,
                                 sinkhorn_iters=swav_cfg.sinkhorn_iters)
        else:
            def loss_fn(crops):
                return moco_loss(ddp, contrast, crops, model)
        t0 = time.time()
        stats = train_one_epoch(cfg, model=ddp, loss_fn=loss_fn, loader=loader, optimizer=optimizer,
                                scaler=scaler, lrs=lrs, epoch=epoch, start_iter=start_iter, iters_per_epoch=ipe,
                                device=device, amp_dtype=amp_dtype, writer=writer, save=save, monitor=monitor,
                                stop=stop, device_aug=device_aug)
        save((epoch + 1) * ipe)
        record = {"epoch": epoch, **stats, "lr": float(lrs[(epoch + 1) * ipe - 1]), "time_s": time.time() - t0}
        if cfg.knn.root and (epoch + 1) % cfg.knn.every_epochs == 0:
            record.update(knn_probe(unwrap(model).backbone, cfg.knn.root, size=cfg.knn.size,
                                    batch_size=local_bs, device=device, rank=info.rank, world_size=world,
                                    k=cfg.knn.k))
        writer.write(record)
        log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if epoch + 1 < cfg.optim.epochs and stop.requested(device):  # last.pth holds this epoch's end
            stop.exit((epoch + 1) * ipe, last, writer)

    if cfg.export_at_end and dist.is_main():
        if cfg.model.norm == "batch":
            paths_out = export_backbone({"model": unwrap(model).state_dict(), "config": cfg.to_dict()}, cfg.out)
            log("exported", *paths_out)
        else:
            log(f"model.norm={cfg.model.norm}: no torchvision export (only BatchNorm backbones)")
    dist.barrier()
    dist.cleanup()
    stop.close()


if __name__ == "__main__":
    main(cli("SwAV / MoCo-v2 pre-training on face images")[0])
