"""The start and the end of a task run, around ``common.engine``'s training (paper §3.3-§3.4, App. A.2-A.3).

``start_run`` checks the config before the run folder is made, seeds, writes config.yaml and opens
log.jsonl; ``select_training_keys`` draws the few-shot subset of a training set (``common.subsample``);
``predict`` and ``gather_by_index`` collect outputs across ranks by sample index; ``write_metrics``
writes metrics.json atomically.
"""
import json
import os

import numpy as np
import torch

from common import distributed
from common.checkpoint import unwrap
from common.config import git_sha, save_config
from common.engine import amp_dtype, autocast
from common.files import write_json
from common.logger import JsonlWriter, log, progress
from common.subsample import check_fraction, load_keys, save_keys, subset_keys

def check_run_config(cfg, min_epochs=1):
    """Settings that would otherwise fail late, or silently write an untrained last.pth: data.fraction
    in (0, 1] and optim.epochs >= ``min_epochs`` (checked before the run folder is made; face recognition
    allows 0, its explicit evaluate-the-initialisation mode)."""
    check_fraction(cfg.data.fraction, "data.fraction")
    epochs = cfg.optim.epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < min_epochs:
        raise ValueError(f"optim.epochs={epochs!r}: epochs must be >= {min_epochs} (0 would save an untrained model)")


def start_run(cfg, program, info, min_epochs=1):
    """The start of every task's ``train.py``: check the config (``check_run_config``) and that the
    global batch splits over the ranks, seed torch with ``cfg.seed`` (same initial weights on every
    rank), write OUT/config.yaml and log it with the git revision (rank 0); returns the OUT/log.jsonl
    writer (mirrored to TensorBoard with ``tensorboard=true``)."""
    check_run_config(cfg, min_epochs)
    if cfg.optim.batch_size % info.world_size:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {info.world_size} ranks")
    torch.manual_seed(cfg.seed)
    if distributed.is_main():
        os.makedirs(cfg.out, exist_ok=True)
        save_config(cfg, cfg.out)
        log(f"{program} git {git_sha()}\n" + json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    return JsonlWriter(os.path.join(cfg.out, "log.jsonl"), tensorboard=cfg.get("tensorboard", False))


def select_training_keys(keys, *, fraction, seed, subset_file, out_dir):
    """Indices into ``keys`` of the training subset (paper §5 "Data & label regime", App. A.3).

    ``subset_file`` (a key file written by ``save_keys``) wins over ``fraction``; otherwise
    ``fraction`` < 1 draws ``subset_keys(keys, fraction, seed)``. The subset used is written to
    ``out_dir/subset_keys.txt`` (+ sha256) on rank 0 so it can be passed back in (not with ``out_dir=None``).
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
    if out_dir is not None and distributed.is_main():
        save_keys(os.path.join(out_dir, "subset_keys.txt"), chosen)
    position = {k: i for i, k in enumerate(keys)}
    return np.sort(np.array([position[k] for k in chosen], dtype=np.int64))


def gather_by_index(index, *columns):
    """Rows (``index`` (N,), ``columns`` (N, ...) tensors on the collective's device) from every rank, one per
    sample index, sorted by it: DistributedSampler's padding duplicates count once (house style §8.13).
    Returns (indices, [numpy column, ...])."""
    index = distributed.all_gather_varlen(index).cpu().numpy()
    columns = [distributed.all_gather_varlen(c).cpu().numpy() for c in columns]
    order, first = np.unique(index, return_index=True)
    return order, [c[first] for c in columns]


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
            with autocast(device, amp_dtype(amp, device)):
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
