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
import functools
import math
import os
import random
import time

import numpy as np
import torch
from torch import nn

from common import distributed as dist
from common import engine
from common.backbone import build_backbone
from common.checkpoint import make_state, restore, save_checkpoint, unwrap
from common.config import cli, git_sha, save_config
from common.finetune import write_metrics
from common.logger import JsonlWriter, log, progress, read_jsonl
from common.optim import LARS, cosine_schedule, set_lr
from pretrain.collapse import CollapseGuard, collapse_value, embedding_spread
from pretrain.data import collate_skip_bad
from pretrain.export import export_backbone
from pretrain.fast_multicrop import build_transform, resolve_num_workers
from pretrain.moco import MoCoModel, MomentumContrast, moco_loss
from pretrain.preempt import StopRequest, ignore_stop_signals
from pretrain.probes import build_probes, plot_probes
from pretrain.shards import open_pretrain_data
from pretrain.swav import EmbeddingQueue, SwAVModel, check_epsilon, swav_loss


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


class Collapsed(RuntimeError):
    """Raised on every rank when the collapse guard stops the run (collapse.on_collapse=stop)."""


def train_one_epoch(cfg, *, model, loss_fn, loader, optimizer, scaler, lrs, epoch, start_iter, iters_per_epoch,
                    device, memory_format, amp_dtype, writer, save, guard, after_step, stop=None,
                    device_aug=None) -> dict:
    """One epoch from batch ``start_iter``; returns the epoch's mean loss, images and skipped files.
    ``device_aug`` (pretrain.fast_multicrop.DeviceAugment) finishes the augmentation on the device;
    ``guard`` (pretrain.collapse) sees each step's loss and embedding spread; ``after_step(step + 1)``
    runs after each optimiser step (the probes). With a ``stop`` request (pretrain.preempt) pending on
    any rank, checkpoints and exits (code 75)."""
    model.train()
    world = dist.get_world_size()
    loss_sum, n_images, n_skipped = 0.0, 0.0, 0
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
            crops = (device_aug(crops, device, memory_format) if device_aug is not None
                     else [c.to(device, non_blocking=True, memory_format=memory_format) for c in crops])
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss, emb = loss_fn(crops, epoch)
            n_global = counts[0].item()
            sums = dist.all_reduce_sum(torch.stack([loss.detach().float() * n_local, embedding_spread(emb)]))
            total, spread = sums[0].item(), sums[1].item() / world
            if not math.isfinite(total):
                raise FloatingPointError(f"non-finite loss {total} at step {step} (epoch {epoch}, "
                                         f"iteration {it}); last good checkpoint: {cfg.out}/last.pth")
            # DDP averages gradients over processes: weight each by its share of the global batch
            backward_step(model, optimizer, scaler, loss * (n_local * world / n_global),
                          freeze_prototypes=cfg.method == "swav" and step < cfg.swav.freeze_prototypes_iters)
            loss_sum, n_images = loss_sum + total, n_images + n_global
            if (step + 1) % cfg.log_every_iters == 0:
                writer.write({"step": step, "epoch": epoch, "iter": it, "loss": total / n_global,
                              "spread": spread, "lr": float(lrs[step])})
            message = guard.update(total / n_global, spread)
            if message:
                log("WARNING:", message)
                writer.write({"step": step, "collapse": message})
                if guard.stop:
                    raise Collapsed(message)
            after_step(step + 1)
        stopping = stop is not None and it + 1 < iters_per_epoch and stop.requested(device)  # epoch ends: main()
        if it + 1 < iters_per_epoch and (stopping or cfg.checkpoint_every_iters
                                         and (step + 1) % cfg.checkpoint_every_iters == 0):
            save(step + 1)
        if stopping:
            stop.exit(step + 1, os.path.join(cfg.out, "last.pth"), writer)
    skipped = int(dist.all_reduce_sum(torch.tensor([n_skipped], device=device)).item())
    return {"loss": loss_sum / max(n_images, 1), "images": int(n_images), "skipped": skipped}


def build_optimizer(cfg, model):
    """LARS (App. A.1) or SGD (MoCo-v2) over every parameter."""
    if cfg.optim.name == "lars":
        return LARS(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                    weight_decay=cfg.optim.weight_decay)
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                               weight_decay=cfg.optim.weight_decay)
    raise ValueError(f"optim.name={cfg.optim.name!r}: expected 'lars' or 'sgd'")


def build_loss(cfg, *, model, ddp, contrast, queue):
    """``loss_fn(crops, epoch) -> (loss, embeddings)``: SwAV with ``queue`` from swav.queue_start_epoch
    on, or MoCo-v2 with ``contrast``."""
    if cfg.method == "moco":
        return lambda crops, epoch: moco_loss(ddp, contrast, crops, model)
    swav_cfg, swav_model = cfg.swav, unwrap(model)

    def loss_fn(crops, epoch):
        swav_model.normalize_prototypes()
        return swav_loss(ddp, crops, queue if epoch >= swav_cfg.queue_start_epoch else None,
                         prototypes=swav_model.prototypes.weight, crops_for_assign=swav_cfg.crops_for_assign,
                         temperature=swav_cfg.temperature, epsilon=swav_cfg.epsilon,
                         sinkhorn_iters=swav_cfg.sinkhorn_iters)
    return loss_fn


def build_queue(cfg, *, local_bs, device, info):
    """SwAV's embedding queue (used from swav.queue_start_epoch on), or None without one."""
    swav_cfg = cfg.swav
    if cfg.method != "swav" or swav_cfg.queue_length <= 0:
        return None
    local_len = swav_cfg.queue_length // cfg.data.batch_size * local_bs  # a multiple of the batch
    if local_len < 1:
        raise ValueError(f"swav.queue_length={swav_cfg.queue_length} is shorter than one global batch")
    return EmbeddingQueue(len(swav_cfg.crops_for_assign), local_len, cfg.model.out_dim, device=device,
                          rank=info.rank, world_size=info.world_size)


class ProbeLog:
    """The representation probes of a run (pretrain/probes.py) on rank 0: at step 0, every
    probe.every_iters steps and at the end, each result in log.jsonl and probes.png."""

    def __init__(self, cfg, writer, device):
        self.probes = build_probes(cfg.probe) if dist.is_main() else None
        self.every, self.writer, self.device = cfg.probe.every_iters, writer, device
        self.png = os.path.join(cfg.out, "probes.png")
        log_path = os.path.join(cfg.out, "log.jsonl")
        old = read_jsonl(log_path) if os.path.isfile(log_path) else []
        self.history = [{"step": r["step"], **r["probe"]} for r in old if "probe" in r]  # a resumed run's

    def __call__(self, model, step, *, final=False):
        due = final or (step == 0 and not self.history) or (self.every and step % self.every == 0)
        if self.probes is None or not due or (self.history and self.history[-1]["step"] == step):
            return
        scores = self.probes.run(unwrap(model).backbone, self.device)
        self.history.append({"step": step, **scores})
        self.writer.write({"step": step, "probe": scores, "probe_floors": self.probes.floors})
        plot_probes(self.history, self.probes.floors, self.png)
        log(f"probes at step {step}: " + " ".join(f"{k} {v:.4g}" for k, v in scores.items()))

    def summary(self) -> dict:
        if self.probes is None or not self.history:
            return {}
        return {"probes": {"step0": self.history[0], "final": self.history[-1], "floors": self.probes.floors,
                           "history": self.history}, "probe_seconds": self.probes.seconds}


def main(cfg):
    # --- processes, seeds, run folder ---
    info = dist.init()
    device, world = info.device, info.world_size
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: identical initial weights
    torch.backends.cudnn.benchmark = True
    cfg["out"] = cfg.out or os.path.join("runs", cfg.name)
    memory_format = torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    last = os.path.join(cfg.out, "last.pth")
    if dist.is_main():
        save_config(cfg, cfg.out)
    writer = JsonlWriter(os.path.join(cfg.out, "log.jsonl"), tensorboard=cfg.tensorboard, step_key="step")
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} (global) is not divisible by {world} processes")
    local_bs = cfg.data.batch_size // world

    # --- data ---
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

    # --- model, SwAV queue / MoCo key encoder, loss, optimiser ---
    model = build_model(method=cfg.method, arch=cfg.model.arch, init=cfg.model.init, norm=cfg.model.norm,
                        hidden_dim=cfg.model.hidden_dim, out_dim=cfg.model.out_dim,
                        n_prototypes=cfg.swav.n_prototypes).to(device)
    if cfg.model.sync_bn:
        model = dist.convert_sync_bn(model)  # App. A.1 "Synchronized Batch Normalization" (CUDA only)
    model = model.to(memory_format=memory_format)
    contrast, extra_state = None, {}
    if cfg.method == "moco":  # the key encoder copies the (SyncBN-converted) query encoder
        contrast = MomentumContrast(model, queue_size=cfg.moco.queue_size, momentum=cfg.moco.momentum,
                                    temperature=cfg.moco.temperature, generator=torch.Generator().manual_seed(cfg.seed))
        extra_state["moco"] = contrast
    else:
        check_epsilon(cfg.swav.epsilon)
    queue = build_queue(cfg, local_bs=local_bs, device=device, info=info)
    ddp = dist.wrap_ddp(model, info)
    loss_fn = build_loss(cfg, model=model, ddp=ddp, contrast=contrast, queue=queue)
    optimizer = build_optimizer(cfg, model)
    lrs = cosine_schedule(cfg.optim.lr, cfg.optim.final_lr, cfg.optim.epochs, ipe,
                          warmup_epochs=cfg.optim.warmup_epochs, start_warmup_value=cfg.optim.warmup_start_lr)
    amp_dtype = engine.amp_dtype(cfg.amp, device)  # CPU runs stay float32
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    # --- resume ---
    start = 0
    if os.path.isfile(last):
        extra = restore(last, model, optimizer, scaler if scaler.is_enabled() else None, **extra_state)
        if extra.get("iters_per_epoch") != ipe:
            raise ValueError(f"{last}: saved with {extra.get('iters_per_epoch')} iterations/epoch, now {ipe} "
                             f"(dataset, batch size or process count changed); use a new out= folder")
        start = extra["iteration"]
        if queue is not None and extra.get("queue") is not None and not queue.load_state_dict(extra["queue"]):
            log("queue in the checkpoint has another shape or process count: starting empty")
        log(f"resumed from {last} at step {start} (epoch {start // ipe}, iteration {start % ipe})")
        writer.write({"event": "resume", "step": start})

    def save(step):
        queue_sd = queue.state_dict() if queue is not None else None  # collective: all ranks
        if dist.is_main():
            save_checkpoint(last, make_state(model, optimizer, scaler, epoch=step // ipe, iteration=step,
                                             config=cfg, queue=queue_sd, iters_per_epoch=ipe, **extra_state))

    # --- monitors: probes and collapse guard ---
    probes = ProbeLog(cfg, writer, device)
    guard = CollapseGuard(cfg.method, collapse_value(cfg.method, n_prototypes=cfg.swav.n_prototypes,
                                                     queue_size=cfg.moco.queue_size),
                          tol=cfg.collapse.tol, min_spread=cfg.collapse.min_spread,
                          patience=cfg.collapse.patience_iters, on_collapse=cfg.collapse.on_collapse)
    t_start = time.time()
    probes(model, start)

    # --- training ---
    try:
        for epoch in range(start // ipe, cfg.optim.epochs):
            start_iter = start % ipe if epoch == start // ipe else 0
            sampler.set_epoch(epoch, start_iter)
            t0 = time.time()
            stats = train_one_epoch(cfg, model=ddp, loss_fn=loss_fn, loader=loader, optimizer=optimizer,
                                    scaler=scaler, lrs=lrs, epoch=epoch, start_iter=start_iter, iters_per_epoch=ipe,
                                    device=device, memory_format=memory_format, amp_dtype=amp_dtype,
                                    writer=writer, save=save, guard=guard,
                                    after_step=functools.partial(probes, model), stop=stop, device_aug=device_aug)
            save((epoch + 1) * ipe)
            record = {"epoch": epoch, **stats, "lr": float(lrs[(epoch + 1) * ipe - 1]), "time_s": time.time() - t0}
            writer.write(record)
            log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if epoch + 1 < cfg.optim.epochs and stop.requested(device):  # last.pth holds this epoch's end
                stop.exit((epoch + 1) * ipe, last, writer)
    except Collapsed:
        finish(cfg, probes, collapsed=True, seconds=time.time() - t_start)
        raise SystemExit(3) from None
    probes(model, cfg.optim.epochs * ipe, final=True)
    finish(cfg, probes, collapsed=guard.collapsed, seconds=time.time() - t_start)

    # --- export ---
    if cfg.export_at_end and dist.is_main():
        if cfg.model.norm == "batch":
            paths_out = export_backbone({"model": unwrap(model).state_dict(), "config": cfg.to_dict()}, cfg.out)
            log("exported", *paths_out)
        else:
            log(f"model.norm={cfg.model.norm}: no torchvision export (only BatchNorm backbones)")
    dist.barrier()
    dist.cleanup()
    stop.close()


def finish(cfg, probes, *, collapsed: bool, seconds: float) -> None:
    """``metrics.json``: collapsed or not, each probe at step 0 and at the end, and the probes' share of the time."""
    summary = {"collapsed": collapsed, "train_seconds": seconds, **probes.summary()}
    if "probe_seconds" in summary:
        summary["probe_fraction"] = summary["probe_seconds"] / max(seconds, 1e-9)
    write_metrics(cfg.out, summary)


if __name__ == "__main__":
    main(cli("SwAV / MoCo-v2 pre-training on face images")[0])
