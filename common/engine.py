"""The one training engine of every downstream task (paper §3.3 "Adaptation methods", App. A.2-A.3).

landmarks, au_intensity, emotion, reconstruction3d, face_recognition and distill give it their data, model,
loss and validation metric; everything else lives here, once:

- the epoch loop with one lr per iteration (``lr_values``), AMP (bf16 autocast, or fp16 with a GradScaler)
  and DDP; fine-tuning or a linear probe whose frozen backbone keeps its BN statistics, checked after the
  first epoch as MoCo's ``main_lincls.py`` does (house style §8.18);
- resume from an atomic OUT/last.pth (model, optimizer, scaler, RNG and the run's identity, which must match)
  and OUT/best.pth chosen on a validation metric in the direction ``common.metrics.lower_is_better`` declares;
- the seed of each epoch (``epoch_seed``): sample order, augmentation and DataLoader worker streams are
  functions of (seed, epoch, rank), so a resumed run repeats the uninterrupted one exactly;
- the bad-sample policy: ``collate_readable`` drops an unreadable sample (``None``, or a dict whose ``valid``
  is False) from its batch and counts it; a batch with nothing left is skipped, or ends a DDP run;
- log.jsonl: a record every ``log_every`` iterations (with ``iteration``) and one per epoch (with ``time_s``).

Thin ``train.py`` entry points drive it, in the manner of MAE's ``engine_finetune.py``.
"""
import os
import time
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from common import distributed
from common.checkpoint import make_state, restore, save_checkpoint, unwrap
from common.logger import log, progress
from common.metrics import lower_is_better
from common.optim import constant_schedule, cosine_schedule, param_groups, set_lr, step_schedule

ADAPTATION_MODES = ("finetune", "linear")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def epoch_seed(seed, epoch, rank=0):
    """The torch seed of one rank's epoch: augmentation and the DataLoader workers' seeds derive from it."""
    return seed * 100003 + epoch * 1009 + rank


def amp_dtype(amp, device):
    """Autocast dtype of ``amp`` (``"bf16"`` | ``"fp16"`` | ``"off"``, or a bool for bf16 / off); None off CUDA."""
    name = {True: "bf16", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp
    if name not in AMP_DTYPES:
        raise ValueError(f"amp={amp!r}: expected one of {list(AMP_DTYPES)} or a bool")
    return AMP_DTYPES[name] if device.type == "cuda" else None


def autocast(device, dtype):
    """torch.autocast on ``device`` with ``dtype`` (an ``amp_dtype`` result); off when it is None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def configure_adaptation(model, mode):
    """Freeze ``model.backbone`` for ``mode="linear"``; ``"finetune"`` leaves everything trainable."""
    if mode not in ADAPTATION_MODES:
        raise ValueError(f"model.adaptation must be one of {ADAPTATION_MODES}, got {mode!r}")
    if mode == "linear":
        unwrap(model).backbone.requires_grad_(False)


def prepare_model(model, *, mode, device, sync_bn=True):
    """``configure_adaptation``, SyncBatchNorm for fine-tuning under NCCL (``sync_bn``), then ``device``."""
    configure_adaptation(model, mode)
    if mode == "finetune" and sync_bn:
        model = distributed.convert_sync_bn(model)
    return model.to(device)


def set_train_mode(model, mode):
    """model.train(), except a linear probe's backbone, which stays in eval mode (frozen BN statistics)."""
    model.train()
    if mode == "linear":
        unwrap(model).backbone.eval()


def backbone_fingerprint(model):
    """Per-tensor (sum, sum of squares) of every backbone parameter and buffer, float64 (K, 2)."""
    tensors = [t.detach().double() for t in unwrap(model).backbone.state_dict().values() if t.is_floating_point()]
    return torch.stack([torch.stack([t.sum(), (t * t).sum()]) for t in tensors]).cpu()


def build_optimizer(model, optim, *, lr=None):
    """``optim.name`` (default adam, with ``betas``; or sgd, with ``momentum``) over ``param_groups``: the backbone's
    lr is ``optim.backbone_lr_mult`` (default 1) times the head's, the search axis of paper §3.3. ``lr`` overrides
    ``optim.lr`` (face recognition scales it with the batch)."""
    groups = param_groups(model, weight_decay=optim["weight_decay"],
                          backbone_lr_mult=optim.get("backbone_lr_mult", 1.0))
    lr, name = optim["lr"] if lr is None else lr, optim.get("name", "adam")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(optim.get("betas", (0.9, 0.999))))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim["momentum"])
    raise ValueError(f"optim.name must be adam or sgd, got {name!r}")


def lr_values(kind, *, base_lr, epochs, iters_per_epoch, milestones=(), gamma=0.1, warmup_epochs=0, final_lr=0.0):
    """One lr per iteration: ``kind`` in {"constant", "step", "cosine"} (common.optim), after a linear warm-up
    of ``warmup_epochs``; step ``milestones`` are fractions of the run's epochs, cosine decays to ``final_lr``."""
    if kind == "constant" and not warmup_epochs:
        return constant_schedule(base_lr, epochs, iters_per_epoch)
    if kind in ("step", "constant"):
        marks = [m * epochs for m in milestones] if kind == "step" else []
        return step_schedule(base_lr, marks, gamma, epochs, iters_per_epoch, warmup_epochs=warmup_epochs)
    if kind == "cosine":
        return cosine_schedule(base_lr, final_lr, epochs, iters_per_epoch, warmup_epochs=warmup_epochs)
    raise ValueError(f"optim.schedule must be constant, step or cosine, got {kind!r}")


def _readable(sample):
    return sample is not None and not (isinstance(sample, dict) and sample.get("valid", True) is False)


def collate_readable(batch):
    """default_collate over the readable samples; ``"skipped"`` counts the unreadable ones (None, or valid=False)."""
    kept = [b for b in batch if _readable(b)]
    out = default_collate(kept) if kept else {}
    out["skipped"] = len(batch) - len(kept)
    return out


def make_loader(dataset, *, batch_size, train, workers, seed, drop_last=None, collate_fn=collate_readable):
    """DataLoader over this rank's share of ``dataset``: a DistributedSampler also in a world of 1, so the order
    is a function of (seed, epoch) only; call ``loader.sampler.set_epoch`` every epoch (``fit`` does). Training
    drops the last partial batch unless it is the only one (``drop_last`` overrides). Workers are not
    persistent: a persistent worker's augmentation stream would carry over epochs and break exact resume."""
    world, rank = distributed.get_world_size(), distributed.get_rank()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed)
    if drop_last is None:
        drop_last = train and len(sampler) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available())


def image_forward(model, batch):
    """The default forward of a training step: the model on the batch's images."""
    return model(batch["image"])


def train_one_epoch(model, loader, optimizer, lrs, iteration, loss_fn, *, device, mode, amp, epoch, seed, writer,
                    log_every=50, forward=image_forward, scaler=None, tags=None, stream=0):
    """One pass over ``loader``; ``loss_fn(forward(model, batch), batch) -> (loss, {name: float tensor})``.

    The sample order and augmentation are functions of (``seed``, ``stream + epoch``, rank). ``lrs[iteration]``
    is set before each step; the forward pass runs under autocast (``amp`` as ``amp_dtype`` reads it), the
    loss in float32 outside it, through ``scaler`` when given (fp16). Every ``log_every`` iterations a record (plus
    ``tags``) goes to ``writer``. Returns (next iteration, {name: mean over steps and ranks} with ``lr`` the
    last one set and ``iterations``, unreadable samples skipped on all ranks). A non-finite loss stops the run
    naming the step (house style §8.15).
    """
    dtype = amp_dtype(amp, device)
    set_train_mode(model, mode)
    loader.sampler.set_epoch(stream + epoch)
    torch.manual_seed(epoch_seed(seed, stream + epoch, distributed.get_rank()))
    sums, steps, lr = {}, 0, float("nan")
    skipped = torch.zeros((), dtype=torch.float64, device=device)
    for batch in progress(loader, desc=f"epoch {epoch + 1}"):
        skipped += batch.pop("skipped")
        if not batch:  # every sample of the batch unreadable
            if distributed.get_world_size() > 1:  # skipping would desynchronise DDP's gradient reduction
                raise RuntimeError(f"epoch {epoch + 1}: a whole batch of unreadable samples on rank "
                                   f"{distributed.get_rank()}; fix or remove the files")
            continue
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        lr = float(lrs[min(iteration, len(lrs) - 1)])
        set_lr(optimizer, lr)
        with autocast(device, dtype):
            outputs = forward(model, batch)
        loss, parts = loss_fn(outputs, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch + 1}, iteration {iteration}; "
                                     f"the last good checkpoint is last.pth")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        parts = {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.double()
        if writer is not None and iteration % log_every == 0:
            writer.write({**(tags or {}), "epoch": epoch + 1, "iteration": iteration, "lr": lr,
                          **{k: float(v) for k, v in parts.items()}})
        steps += 1
        iteration += 1
    world = distributed.get_world_size()
    means = {k: float(distributed.all_reduce_sum(v.reshape(1)).item()) / world / max(steps, 1)
             for k, v in sorted(sums.items())}
    skipped = int(distributed.all_reduce_sum(skipped.reshape(1)).item())
    return iteration, {**means, "lr": lr, "iterations": steps}, skipped


class Best:
    """The best validation value of ``metric`` so far, in the direction ``common.metrics`` declares for it."""

    def __init__(self, metric, state=None):
        self.metric, self.lower = metric, lower_is_better(metric)
        self.value, self.epoch = float("inf") if self.lower else -float("inf"), 0
        if state and state.get("metric") == metric:
            self.value, self.epoch = state["value"], state["epoch"]

    def update(self, value, epoch):
        """True (and remembered) when ``value`` beats the best so far."""
        if value < self.value if self.lower else value > self.value:
            self.value, self.epoch = float(value), epoch
            return True
        return False

    def state(self):
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch}


class FitResult(NamedTuple):
    checkpoint: str       # best.pth when validation chose one, else last.pth
    best: dict            # Best.state(), or {} without validation
    skipped_images: int | None  # unreadable samples skipped in the last epoch trained (one pass); None: none ran


def _check_identity(path, state, identity):
    differ = sorted(k for k, v in identity.items() if state.get(k) != v)
    if differ:
        raise ValueError(f"{path} was saved by another run ({', '.join(differ)} differ); use a new out= folder")


def fit(model, loader, optimizer, lrs, loss_fn, *, info, out_dir, epochs, mode, amp, seed, config, writer,
        log_every=50, validate=None, select=None, eval_every=1, forward=image_forward, scaler=None,
        identity=None, tags=None, stream=0, resume=True):
    """Train for ``epochs`` epochs with auto-resume from ``out_dir/last.pth``; returns a ``FitResult``.

    Each epoch: ``train_one_epoch`` on the DDP-wrapped model; then, every ``eval_every`` epochs and at the end,
    ``validate(model) -> {name: value}`` if given, whose ``select`` entry picks best.pth; a log.jsonl record
    (plus ``tags``); an atomic last.pth with the model, optimizer, scaler, epoch, RNG, ``config`` and
    ``identity`` (plain values that a resumed run must match, e.g. the classes). ``resume=False`` starts
    afresh even if last.pth exists (distill: a finished step's file). ``stream`` offsets the epoch seeds.
    """
    if (validate is None) != (select is None):
        raise ValueError("fit: give validate and select together")
    last_path, best_path = os.path.join(out_dir, "last.pth"), os.path.join(out_dir, "best.pth")
    identity, start, best = identity or {}, 0, Best(select) if select else None
    if resume and os.path.isfile(last_path):
        state = restore(last_path, model, optimizer, scaler if scaler is not None and scaler.is_enabled() else None)
        _check_identity(last_path, state, identity)
        start = state["epoch"]
        best = Best(select, state.get("best")) if select else None
        log(f"resumed from {last_path} at epoch {start}")
        writer.write({**(tags or {}), "event": "resume", "epoch": start})

    def save(path, epoch):
        if distributed.is_main():
            save_checkpoint(path, make_state(model, optimizer, scaler, epoch=epoch, config=config,
                                             iteration=epoch * len(loader), best=best.state() if best else {},
                                             **identity))

    ddp_model = distributed.wrap_ddp(model, info)
    fingerprint = backbone_fingerprint(model) if mode == "linear" else None
    skipped = None
    for epoch in range(start, epochs):
        t0 = time.time()
        _, stats, skipped = train_one_epoch(ddp_model, loader, optimizer, lrs, epoch * len(loader), loss_fn,
                                            device=info.device, mode=mode, amp=amp, epoch=epoch, seed=seed,
                                            writer=writer, log_every=log_every, forward=forward, scaler=scaler,
                                            tags=tags, stream=stream)
        if fingerprint is not None and not torch.equal(fingerprint, backbone_fingerprint(model)):
            raise RuntimeError("linear adaptation changed the backbone (parameters or BN statistics)")
        fingerprint = None
        record = {**(tags or {}), "epoch": epoch + 1, **stats, "skipped_images": skipped,
                  "time_s": round(time.time() - t0, 2)}
        if skipped:
            log(f"epoch {epoch + 1}: {skipped} unreadable samples skipped")
        if validate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            metrics = validate(model)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if best.update(metrics[select], epoch + 1):
                save(best_path, epoch + 1)
        writer.write(record)
        log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        save(last_path, epoch + 1)
        distributed.barrier()
    if best is not None and os.path.isfile(best_path):
        log(f"best epoch {best.epoch} (validation {best.metric} {best.value:.4f})")
        return FitResult(best_path, best.state(), skipped)
    return FitResult(last_path, best.state() if best else {}, skipped)
