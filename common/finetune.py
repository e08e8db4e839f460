"""Task adaptation shared by the face-task train.py files (paper §3.3 "Adaptation methods", §3.4, App. A.2-A.3).

Fine-tuning trains backbone and head; the linear mode freezes the backbone and keeps its
BatchNorm layers in eval mode, so their running statistics do not move either (MoCo
``main_lincls.py``; house style §8.18). Also here: the few-shot subset of a training set
(``common.subsample``), per-iteration lr arrays, loaders that drop unreadable samples, one epoch of
training with a caller-given loss, and prediction gathered across ranks by sample index.
"""
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from common import distributed
from common.checkpoint import make_state, restore, save_checkpoint, unwrap
from common.config import git_sha, save_config
from common.files import write_json
from common.logger import JsonlWriter, log, progress
from common.optim import constant_schedule, cosine_schedule, set_lr, step_schedule
from common.subsample import check_fraction, load_keys, save_keys, subset_keys

ADAPTATION_MODES = ("finetune", "linear")


def check_run_config(cfg):
    """Settings that would otherwise fail late, or silently write an untrained last.pth: data.fraction
    in (0, 1] and optim.epochs >= 1 (checked before the run folder is made)."""
    check_fraction(cfg.data.fraction, "data.fraction")
    if isinstance(cfg.optim.epochs, bool) or not isinstance(cfg.optim.epochs, int) or cfg.optim.epochs < 1:
        raise ValueError(f"optim.epochs={cfg.optim.epochs!r}: epochs must be >= 1 (0 would save an untrained model)")


def start_run(cfg, program, info):
    """The start of every task's ``train.py``: check the config (``check_run_config``) and that the
    global batch splits over the ranks, seed torch with ``cfg.seed`` (same initial weights on every
    rank), write OUT/config.yaml and log it with the git revision (rank 0); returns the OUT/log.jsonl
    writer."""
    check_run_config(cfg)
    if cfg.optim.batch_size % info.world_size:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {info.world_size} ranks")
    torch.manual_seed(cfg.seed)
    if distributed.is_main():
        os.makedirs(cfg.out, exist_ok=True)
        save_config(cfg, cfg.out)
        log(f"{program} git {git_sha()}\n" + json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    return JsonlWriter(os.path.join(cfg.out, "log.jsonl"))


def configure_adaptation(model, mode):
    """Freeze ``model.backbone`` for ``mode="linear"``; ``"finetune"`` leaves everything trainable."""
    if mode not in ADAPTATION_MODES:
        raise ValueError(f"model.adaptation must be one of {ADAPTATION_MODES}, got {mode!r}")
    if mode == "linear":
        unwrap(model).backbone.requires_grad_(False)


def set_train_mode(model, mode):
    """model.train(), except a linear probe's backbone, which stays in eval mode (frozen BN statistics)."""
    model.train()
    if mode == "linear":
        unwrap(model).backbone.eval()


def backbone_fingerprint(model):
    """Per-tensor (sum, sum of squares) of every backbone parameter and buffer, float64 (K, 2)."""
    tensors = [t.detach().double() for t in unwrap(model).backbone.state_dict().values() if t.is_floating_point()]
    return torch.stack([torch.stack([t.sum(), (t * t).sum()]) for t in tensors]).cpu()


def select_training_keys(keys, *, fraction, seed, subset_file, out_dir):
    """Indices into ``keys`` of the training subset (paper §5 "Data & label regime", App. A.3).

    ``subset_file`` (a key file written by ``save_keys``) wins over ``fraction``; otherwise
    ``fraction`` < 1 draws ``subset_keys(keys, fraction, seed)``. The subset used is written to
    ``out_dir/subset_keys.txt`` (+ sha256) on rank 0 so it can be passed back in.
    """
    if subset_file:
        chosen = load_keys(subset_file)
        unknown = sorted(set(chosen) - set(keys))
        if unknown:
            raise ValueError(f"{subset_file}: {len(unknown)} keys are not in the training set, e.g. {unknown[:3]}")
    elif fraction < 1.0:
        chosen = subset_keys(keys, fraction, seed)
    else:
        return np.arange(len(keys))
    if distributed.is_main():
        save_keys(os.path.join(out_dir, "subset_keys.txt"), chosen)
    position = {k: i for i, k in enumerate(keys)}
    return np.sort(np.array([position[k] for k in chosen], dtype=np.int64))


def lr_values(kind, *, base_lr, epochs, iters_per_epoch, milestones=(), gamma=0.1):
    """One lr per iteration: ``kind`` in {"constant", "step", "cosine"} (common.optim); step
    ``milestones`` are fractions of the run's epochs (as in landmarks/configs), cosine decays to 0."""
    if kind == "constant":
        return constant_schedule(base_lr, epochs, iters_per_epoch)
    if kind == "step":
        return step_schedule(base_lr, [m * epochs for m in milestones], gamma, epochs, iters_per_epoch)
    if kind == "cosine":
        return cosine_schedule(base_lr, 0.0, epochs, iters_per_epoch)
    raise ValueError(f"optim.schedule must be constant, step or cosine, got {kind!r}")


def collate_skipping_none(batch):
    """default_collate over the readable samples; ``"skipped"`` counts the unreadable (None) ones."""
    kept = [b for b in batch if b is not None]
    out = default_collate(kept) if kept else {}
    out["skipped"] = len(batch) - len(kept)
    return out


def make_loader(dataset, *, batch_size, train, workers, seed):
    """DataLoader over this rank's share of ``dataset`` (DistributedSampler with world 1 too, so
    shuffling is a function of (seed, epoch) only); training drops the last partial batch unless
    it is the only one. Call ``loader.sampler.set_epoch(epoch)`` every epoch."""
    world, rank = distributed.get_world_size(), distributed.get_rank()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed)
    drop_last = train and len(sampler) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_skipping_none, drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)


def _autocast(device, amp):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def train_one_epoch(model, loader, optimizer, lrs, iteration, loss_fn, *, device, mode, amp, epoch, seed,
                    writer, log_every=50):
    """One pass over ``loader``; ``loss_fn(outputs, batch) -> (loss, {name: float tensor})``.

    The sample order and the augmentation streams are functions of (``seed``, ``epoch``, rank), so a
    resumed run repeats them. ``lrs[iteration]`` is set before each step; every ``log_every``
    iterations a record goes to ``writer`` (epochs counted from 1). Returns (next iteration,
    {name: mean over steps and ranks}, unreadable samples skipped on all ranks). A non-finite loss
    stops the run, naming the step (house style §8.15).
    """
    set_train_mode(model, mode)
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(seed * 100003 + epoch * 1009 + distributed.get_rank())  # workers' seeds derive from it
    sums, steps, skipped = {}, 0, torch.zeros((), dtype=torch.float64, device=device)
    for batch in progress(loader, desc=f"epoch {epoch}"):
        skipped += batch.pop("skipped")
        if "image" not in batch:  # every sample of the batch unreadable
            if distributed.get_world_size() > 1:  # skipping would desynchronise DDP's gradient reduction
                raise RuntimeError(f"epoch {epoch}: a whole batch of unreadable images on rank "
                                   f"{distributed.get_rank()}; fix or remove the files")
            continue
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        set_lr(optimizer, float(lrs[min(iteration, len(lrs) - 1)]))
        with _autocast(device, amp):
            outputs = model(batch["image"])
        loss, parts = loss_fn(outputs, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        parts = {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.double()
        if writer is not None and iteration % log_every == 0:
            writer.write({"epoch": epoch + 1, "iteration": iteration, "lr": float(lrs[min(iteration, len(lrs) - 1)]),
                          **{k: float(v) for k, v in parts.items()}})
        steps += 1
        iteration += 1
    means = {k: float(distributed.all_reduce_sum(v.reshape(1)).item()) / distributed.get_world_size() / max(steps, 1)
             for k, v in sorted(sums.items())}
    return iteration, means, int(distributed.all_reduce_sum(skipped.reshape(1)).item())


def fit(model, loader, optimizer, lrs, loss_fn, *, info, out_dir, epochs, mode, amp, seed, config, writer,
        log_every=50, validate=None, eval_every=1):
    """Train for ``epochs`` epochs with auto-resume from ``out_dir/last.pth``; returns the checkpoint to test.

    Each epoch: ``train_one_epoch`` on the DDP-wrapped model, then (every ``eval_every`` epochs and
    at the end) ``validate(model) -> (score, {name: value})`` if given, where a higher score is
    better and the best epoch is kept as best.pth; a log.jsonl record; an atomic last.pth holding
    the model, optimizer, epoch, RNG and ``config``. In linear mode the backbone is checked to be
    unchanged after the first epoch. Returns best.pth when validation produced one, else last.pth.
    """
    last_path, best_path = os.path.join(out_dir, "last.pth"), os.path.join(out_dir, "best.pth")
    start, best = 0, {"score": -float("inf"), "epoch": 0}
    if os.path.isfile(last_path):
        state = restore(last_path, model, optimizer)
        start, best = state["epoch"], state.get("best", best)
        log(f"resumed from {last_path} at epoch {start}")
    ddp_model = distributed.wrap_ddp(model, info)
    fingerprint = backbone_fingerprint(model) if mode == "linear" else None
    for epoch in range(start, epochs):
        t0 = time.time()
        _, stats, skipped = train_one_epoch(ddp_model, loader, optimizer, lrs, epoch * len(loader), loss_fn,
                                            device=info.device, mode=mode, amp=amp, epoch=epoch, seed=seed,
                                            writer=writer, log_every=log_every)
        if fingerprint is not None and not torch.equal(fingerprint, backbone_fingerprint(model)):
            raise RuntimeError("linear adaptation changed the backbone (parameters or BN statistics)")
        fingerprint = None  # checked after the first epoch, as MoCo's sanity check
        record = {"epoch": epoch + 1, **stats, "skipped_images": skipped, "time_s": round(time.time() - t0, 2)}
        if skipped:
            log(f"epoch {epoch + 1}: {skipped} unreadable images skipped")
        if validate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            score, metrics = validate(model)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if score > best["score"]:
                best = {"score": score, "epoch": epoch + 1}
                if distributed.is_main():
                    save_checkpoint(best_path, make_state(model, optimizer, epoch=epoch + 1, config=config,
                                                          iteration=(epoch + 1) * len(loader), best=best))
        writer.write(record)
        log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if distributed.is_main():
            save_checkpoint(last_path, make_state(model, optimizer, epoch=epoch + 1, config=config,
                                                  iteration=(epoch + 1) * len(loader), best=best))
        distributed.barrier()
    if validate is not None and os.path.isfile(best_path):
        log(f"best epoch {best['epoch']} (validation score {best['score']:.4f})")
        return best_path
    return last_path


def _as_dict(out):
    return out if isinstance(out, dict) else {"output": out}


@torch.no_grad()
def predict(model, loader, *, device, n_items, amp=False, flip=False):
    """Model outputs for every sample of ``loader.dataset``, ordered by sample index.

    Outputs are a tensor or a dict of tensors; the result is {name: float64 array (n_items, ...)}
    (``"output"`` for a plain tensor), NaN where a sample was unreadable, plus ``"seen"`` (bool) and,
    with ``flip=True``, ``NAME_flip`` from the horizontally mirrored images. Ranks gather by index,
    so DistributedSampler's padding duplicates count once (house style §8.13). The unwrapped
    model runs, so no DDP collective depends on how many batches a rank holds.
    """
    net = unwrap(model).eval()
    suffixes = ("", "_flip") if flip else ("",)
    probe = _as_dict(net(torch.zeros(1, 3, 32, 32, device=device)))          # output names and widths
    widths = {k + s: v[0].numel() for k, v in probe.items() for s in suffixes}
    names = sorted(widths)
    chunks = [torch.zeros(0, sum(widths.values()), device=device)]
    indices = [torch.zeros(0, dtype=torch.long, device=device)]
    for batch in progress(loader, desc="predict"):
        if "image" not in batch:
            continue
        images = batch["image"].to(device, non_blocking=True)
        row = {}
        for suffix, view in zip(suffixes, (images, images.flip(-1)) if flip else (images,)):
            with _autocast(device, amp):
                out = _as_dict(net(view))
            row.update({k + suffix: v.float().reshape(len(view), -1) for k, v in out.items()})
        chunks.append(torch.cat([row[k] for k in names], dim=1))               # B x sum(widths)
        indices.append(batch["index"].to(device))
    values = distributed.all_gather_varlen(torch.cat(chunks)).cpu().double().numpy()
    index = distributed.all_gather_varlen(torch.cat(indices)).cpu().numpy()
    table = np.full((n_items, values.shape[1]), np.nan)
    table[index] = values
    out, start = {}, 0
    for name in names:
        block = table[:, start:start + widths[name]]
        out[name] = block[:, 0] if widths[name] == 1 else block
        start += widths[name]
    out["seen"] = np.zeros(n_items, dtype=bool)
    out["seen"][index] = True
    return out


def write_metrics(out_dir, metrics):
    """``out_dir/metrics.json`` (atomic, rank 0) and the same JSON as the last stdout line."""
    if not distributed.is_main():
        return
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    print(json.dumps(metrics, sort_keys=True), flush=True)
