"""CosFace training on VGGFace2 (paper §5.1, App. A.2), also the supervised "Sup. (VGG-F)" pre-training.

    python -m face_recognition.train --config face_recognition/configs/vggface2.yaml data.root=/data \
        model.init=imagenet data.fraction=0.1 optim.epochs=36 out=runs/fr_imagenet_10
    torchrun --nproc_per_node=8 -m face_recognition.train --config ...      # App. A.2: 8 GPUs

optim.batch_size is the global batch, split over the processes; the lr is optim.lr at
optim.lr_batch images and scales linearly with the batch. A run resumes by itself from
OUT/last.pth (written atomically every epoch, with optimiser, scaler and RNG states). At the end
the backbone is exported to OUT/backbone.pth (torchvision layout: the "Sup. (VGG-F)" initialisation
for the other tasks when trained from scratch on all of VGGFace2) and, when eval.after_train is
set, IJB-B / IJB-C are evaluated into OUT/metrics.json.
"""
import math
import os
import random
import time

import numpy as np
import torch

from common import distributed as dist
from common.backbone import build_backbone
from common.checkpoint import export_torchvision, make_state, restore, save_checkpoint, unwrap
from common.config import cli, git_sha, save_config
from common.logger import JsonlWriter, log, progress
from common.optim import cosine_schedule, param_groups, set_lr
from common.subsample import check_fraction, load_keys, save_keys
from face_recognition.cosface import IGNORE_LABEL
from face_recognition.data import choose_subset, load_vggface2, vggface2_training_set
from face_recognition.eval import benchmark_root, run_benchmarks
from face_recognition.model import FaceRecognitionModel

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def training_keys(cfg, root, subset_path):
    """Sample keys of the training set: the split, or its few-shot subset (read back from
    ``subset_path`` when that file exists, so a resumed or repeated run uses the same images)."""
    if cfg.data.subset_file:
        return load_keys(cfg.data.subset_file)
    if cfg.data.fraction < 1.0 and os.path.isfile(subset_path):
        return load_keys(subset_path)
    index = load_vggface2(root, cfg.data.split)
    if index["missing_landmarks"]:
        log(f"{index['missing_landmarks']} listed images have no landmark row and are left out")
    return choose_subset(index["paths"], index["identities"], fraction=cfg.data.fraction, seed=cfg.seed,
                         min_identity_fraction=cfg.data.min_identity_fraction,
                         identity_rule_max_fraction=cfg.data.identity_rule_max_fraction)


def train_one_epoch(model, loader, optimizer, scaler, lrs, *, epoch, iters_per_epoch, device, amp_dtype,
                    writer, log_every):
    """One epoch of CosFace; returns mean loss, train accuracy and the number of unreadable images."""
    model.train()
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, correct, labelled, unreadable
    for it, (images, labels, _) in enumerate(progress(loader, desc=f"epoch {epoch}", total=iters_per_epoch)):
        step = epoch * iters_per_epoch + it
        set_lr(optimizer, float(lrs[step]))  # a numpy float would not load with weights_only=True
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, logits = model(images, labels)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step} (epoch {epoch}, "
                                     f"iteration {it}); the last good checkpoint is last.pth")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        valid = labels != IGNORE_LABEL
        correct = (logits.argmax(1) == labels)[valid].sum()
        totals += torch.stack([loss.detach().double() * valid.sum(), correct.double(), valid.sum().double(),
                               (~valid).sum().double()])
        if (step + 1) % log_every == 0:
            writer.write({"step": step, "epoch": epoch, "loss": loss.item(), "lr": float(lrs[step])})
    totals = dist.all_reduce_sum(totals).tolist()
    return {"loss": totals[0] / max(totals[2], 1), "train_acc": totals[1] / max(totals[2], 1),
            "images": int(totals[2]), "unreadable": int(totals[3])}


def main(cfg):
    check_fraction(cfg.data.fraction, "data.fraction")  # before the run folder is made
    info = dist.init()
    device, world = info.device, info.world_size
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: identical initial weights
    cfg["out"] = cfg.out or os.path.join("runs", cfg.name)
    last, subset_path = os.path.join(cfg.out, "last.pth"), os.path.join(cfg.out, "subset.txt")
    if dist.is_main():
        save_config(cfg, cfg.out)
    writer = JsonlWriter(os.path.join(cfg.out, "log.jsonl"))
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} (global) is not divisible by {world} processes")
    local_bs = cfg.optim.batch_size // world

    root = benchmark_root(cfg.data.root, cfg.data.vggface2)
    ijb_roots = {b: benchmark_root(cfg.data.root, cfg.data[b]) for b in cfg.eval.benchmarks}
    missing = [r for r in ijb_roots.values() if not os.path.isdir(r)]
    if cfg.eval.after_train and missing:  # fail now, not after the training
        raise FileNotFoundError(f"IJB folder(s) not found: {missing}; set data.ijbb / data.ijbc, "
                                f"or eval.after_train=false to train without evaluating")
    keys = training_keys(cfg, root, subset_path)
    if dist.is_main() and cfg.data.fraction < 1.0:
        save_keys(subset_path, keys)  # App. A.3: the subset, reusable with data.subset_file
    dataset, classes = vggface2_training_set(root, split=cfg.data.split, keys=keys, size=cfg.data.size,
                                             mean=cfg.data.mean, std=cfg.data.std, flip_prob=cfg.data.flip_prob)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=info.rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    generator = torch.Generator()
    loader = torch.utils.data.DataLoader(dataset, batch_size=local_bs, sampler=sampler, drop_last=True,
                                         num_workers=cfg.data.num_workers, generator=generator,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    ipe = len(loader)
    if ipe == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of {local_bs} per process")
    lr = cfg.optim.lr * cfg.optim.batch_size / cfg.optim.lr_batch  # linear scaling from the paper's batch 512
    lrs = cosine_schedule(lr, cfg.optim.final_lr, cfg.optim.epochs, ipe, warmup_epochs=cfg.optim.warmup_epochs) \
        if cfg.optim.epochs > 0 else np.zeros(0)  # optim.epochs=0: export / evaluate the initialisation
    log(f"face_recognition git {git_sha()}: {len(dataset)} images of {len(classes)} identities "
        f"(fraction {cfg.data.fraction}), global batch {cfg.optim.batch_size} ({world} x {local_bs}), "
        f"{ipe} iterations/epoch, lr {lr:g}, init {cfg.model.init}, device {device}, run {cfg.out}")

    model = FaceRecognitionModel(build_backbone(cfg.model.arch, cfg.model.init), len(classes),
                                 embedding_dim=cfg.model.embedding_dim, head=cfg.model.head,
                                 dropout=cfg.model.dropout, scale=cfg.loss.scale, margin=cfg.loss.margin).to(device)
    model = dist.convert_sync_bn(model) if cfg.model.sync_bn else model
    ddp = dist.wrap_ddp(model, info)
    optimizer = torch.optim.SGD(param_groups(model, weight_decay=cfg.optim.weight_decay), lr=lr,
                                momentum=cfg.optim.momentum)
    if cfg.amp not in AMP_DTYPES:
        raise ValueError(f"amp={cfg.amp!r}: expected one of {list(AMP_DTYPES)}")
    amp_dtype = AMP_DTYPES[cfg.amp] if device.type == "cuda" else None  # CPU runs stay float32
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start = 0
    if os.path.isfile(last):
        extra = restore(last, model, optimizer, scaler if scaler.is_enabled() else None)
        if extra.get("classes") != classes or extra.get("iters_per_epoch") != ipe:
            raise ValueError(f"{last}: saved for another training set or batch size (identities or "
                             f"iterations per epoch differ); use a new out= folder")
        start = extra["epoch"]
        log(f"resumed from {last} at epoch {start}")
        writer.write({"event": "resume", "epoch": start})

    for epoch in range(start, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        generator.manual_seed(cfg.seed * 1000003 + epoch * world + info.rank)  # worker seeds (flips)
        t0 = time.time()
        stats = train_one_epoch(ddp, loader, optimizer, scaler, lrs, epoch=epoch, iters_per_epoch=ipe,
                                device=device, amp_dtype=amp_dtype, writer=writer, log_every=cfg.log_every_iters)
        if dist.is_main():
            save_checkpoint(last, make_state(model, optimizer, scaler, epoch=epoch + 1, iteration=(epoch + 1) * ipe,
                                             config=cfg, classes=classes, iters_per_epoch=ipe))
        record = {"epoch": epoch, **stats, "lr": float(lrs[(epoch + 1) * ipe - 1]), "time_s": time.time() - t0}
        writer.write(record)
        log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
    if dist.is_main() and not os.path.isfile(last):  # optim.epochs=0: the initialisation itself
        save_checkpoint(last, make_state(model, optimizer, scaler, epoch=0, iteration=0, config=cfg,
                                         classes=classes, iters_per_epoch=ipe))
    dist.barrier()

    if dist.is_main():
        export_torchvision(unwrap(model).backbone, os.path.join(cfg.out, "backbone.pth"))
        log(f"backbone exported to {cfg.out}/backbone.pth (model.init for other tasks)")
    if cfg.eval.after_train:
        run_benchmarks(unwrap(model), ijb_roots, size=cfg.data.size, mean=cfg.data.mean, std=cfg.data.std,
                       batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers, device=device,
                       out=cfg.out, name=os.path.basename(os.path.abspath(cfg.out)))
    dist.barrier()
    dist.cleanup()


if __name__ == "__main__":
    main(cli("CosFace training on VGGFace2 (paper §5.1)")[0])
