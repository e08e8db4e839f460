"""Fine-tune (or linearly adapt) a pre-trained ResNet for facial landmarks (paper §5.2, App. A.2).

    python -m landmarks.train --config landmarks/configs/300w.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=N -m landmarks.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, best.pth, metrics.json};
resumes from last.pth when it exists.
"""
import json
import os
import time

import torch
from torch.utils.data import DataLoader, DistributedSampler

from common import distributed, finetune
from common.backbone import build_backbone
from common.checkpoint import load_checkpoint, make_state, restore, save_checkpoint, unwrap
from common.config import cli
from common.files import write_json
from common.landmark_schemes import flip_permutation
from common.logger import log
from common.optim import constant_schedule, cosine_schedule, param_groups, step_schedule
from landmarks import formats, scores
from landmarks.data import LandmarkDataset, few_shot, train_augment
from landmarks.engine import evaluate, gt_targets, train_one_epoch
from landmarks.heatmap_head import LandmarkModel


def lr_schedule(*, schedule, lr, epochs, iters_per_epoch, milestones, gamma):
    """Per-iteration learning rates; step milestones are fractions of the run's epochs."""
    if schedule == "step":
        return step_schedule(lr, [m * epochs for m in milestones], gamma, epochs, iters_per_epoch)
    if schedule == "cosine":
        return cosine_schedule(lr, 0.0, epochs, iters_per_epoch)
    if schedule == "constant":
        return constant_schedule(lr, epochs, iters_per_epoch)
    raise ValueError(f"optim.schedule must be step, cosine or constant, got {schedule!r}")


def build_model(*, arch, init, n_points, head_width, linear):
    """Backbone from ``init`` + a fresh heatmap head; ``linear`` freezes the backbone (§3.3)."""
    model = LandmarkModel(build_backbone(arch, init), n_points, head_width)
    if linear:
        model.backbone.requires_grad_(False)
    return model


def eval_loader(samples, *, input_size, box_scale, batch_size, num_workers, world_size):
    dataset = LandmarkDataset(samples, input_size=input_size, box_scale=box_scale)
    sampler = DistributedSampler(dataset, shuffle=False) if world_size > 1 else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())


def backbone_snapshot(model):
    return {k: v.detach().clone() for k, v in unwrap(model).backbone.state_dict().items()}


def assert_backbone_unchanged(model, snapshot):
    """Linear adaptation must leave every backbone tensor, BN statistics included, untouched
    (MoCo ``main_lincls.py`` sanity check; house style §8.18)."""
    changed = [k for k, v in unwrap(model).backbone.state_dict().items() if not torch.equal(v, snapshot[k])]
    if changed:
        raise RuntimeError(f"linear adaptation changed backbone tensors: {changed[:5]}")


def test_splits(dataset, root, splits, box):
    """Samples of every test split; 300W's private set is skipped (logged) when absent."""
    out = []
    for split in splits:
        try:
            out.append(formats.load_split(dataset, root, split, box))
        except formats.DatasetMissingError as e:
            if (dataset, split) != ("300w", "private"):
                raise
            log(f"300W private test set not found, skipped: {e}")
    return out


def main(cfg):
    info = distributed.init()
    device, out = info.device, cfg.out
    data, optim, aug = cfg.data, cfg.optim, cfg.aug
    linear = cfg.model.adaptation == "linear"
    if cfg.model.adaptation not in ("finetune", "linear"):
        raise ValueError(f"model.adaptation must be finetune or linear, got {cfg.model.adaptation!r}")
    writer = finetune.start_run(cfg, "landmarks.train", info)

    n_points = formats.N_POINTS[data.dataset]
    samples = formats.load_split(data.dataset, data.root, data.train_split, data.box)
    samples = few_shot(samples, fraction=data.fraction, seed=data.subset_seed, subset_file=data.subset_file,
                       save_to=os.path.join(out, "subset_keys.txt") if distributed.is_main() else None)
    augment = train_augment(rotation=aug.rotation, scale=aug.scale, flip_prob=aug.flip_prob, n_points=n_points)
    train_set = LandmarkDataset(samples, input_size=data.input_size, box_scale=data.box_scale,
                                augment=augment, color_scale=aug.color_scale)
    per_rank = optim.batch_size // info.world_size
    sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed) if info.world_size > 1 else None
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, shuffle=sampler is None,
                        generator=generator, num_workers=data.num_workers, drop_last=False,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    loaders = dict(input_size=data.input_size, box_scale=data.box_scale, batch_size=per_rank,
                   num_workers=data.num_workers, world_size=info.world_size)
    val = formats.load_split(data.dataset, data.root, data.val_split, data.box) if data.val_split else None
    val_loader = eval_loader(val, **loaders) if val is not None else None

    model = build_model(arch=cfg.model.arch, init=cfg.model.init, n_points=n_points,
                        head_width=cfg.model.head_width, linear=linear)
    model = (model if linear else distributed.convert_sync_bn(model)).to(device)
    optimizer = torch.optim.Adam(param_groups(model, weight_decay=optim.weight_decay,
                                              backbone_lr_mult=optim.backbone_lr_mult),
                                 lr=optim.lr, betas=tuple(optim.betas))
    lr_values = lr_schedule(schedule=optim.schedule, lr=optim.lr, epochs=optim.epochs,
                            iters_per_epoch=len(loader), milestones=optim.milestones, gamma=optim.gamma)
    log(f"{len(train_set)} training faces ({data.fraction:.3g} of {data.dataset}/{data.train_split}), "
        f"global batch {optim.batch_size} ({per_rank} x {info.world_size}), {len(loader)} iterations/epoch, "
        f"{optim.epochs} epochs, lr {optim.lr} (backbone x{optim.backbone_lr_mult}), {cfg.model.adaptation}")

    start_epoch, best = 0, {"metric": float("inf"), "epoch": -1}
    last_path, best_path = os.path.join(out, "last.pth"), os.path.join(out, "best.pth")
    if os.path.isfile(last_path):
        state = restore(last_path, model, optimizer)
        start_epoch, best = state["epoch"], state.get("best", best)
        log(f"resumed from {last_path} at epoch {start_epoch}")
    ddp_model = distributed.wrap_ddp(model, info)
    snapshot = backbone_snapshot(model) if linear else None
    targets = gt_targets(input_size=data.input_size, heatmap_size=data.heatmap_size, sigma=data.sigma)
    amp = cfg.train.amp and device.type == "cuda"
    flip_perm = flip_permutation(n_points) if cfg.test.flip_test else None
    scoring = dict(device=device, input_size=data.input_size, flip_perm=flip_perm, amp=amp, decode=cfg.test.decode)

    for epoch in range(start_epoch, optim.epochs):
        start = time.time()
        generator.manual_seed(cfg.seed * 100003 + epoch)           # same order and worker seeds on resume
        torch.manual_seed(cfg.seed * 100003 + epoch * 1009 + info.rank)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(ddp_model, loader, optimizer, lr_values, epoch * len(loader), device=device,
                                targets=targets, epoch=epoch, amp=amp, freeze_backbone=linear)
        if linear and epoch == start_epoch:
            assert_backbone_unchanged(model, snapshot)
        record = {"epoch": epoch + 1, **stats, "time_s": time.time() - start}
        if val_loader is not None and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == optim.epochs):
            metrics, _, _ = evaluate(model, val_loader, val, **scoring)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            value = metrics[scores.PRIMARY[data.dataset]]
            if value < best["metric"]:
                best = {"metric": value, "epoch": epoch + 1}
                if distributed.is_main():
                    save_checkpoint(best_path, make_state(model, optimizer, epoch=epoch + 1, config=cfg,
                                                          iteration=(epoch + 1) * len(loader), best=best))
        if stats["skipped_images"]:
            log(f"epoch {epoch + 1}: {stats['skipped_images']} unreadable images skipped")
        writer.write(record)
        log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                     if not isinstance(v, str)))
        if distributed.is_main():
            save_checkpoint(last_path, make_state(model, optimizer, epoch=epoch + 1, config=cfg,
                                                  iteration=(epoch + 1) * len(loader), best=best))
        distributed.barrier()

    if val_loader is not None and os.path.isfile(best_path):
        model.load_state_dict(load_checkpoint(best_path)["model"])
        log(f"testing best.pth (epoch {best['epoch']}, val {scores.PRIMARY[data.dataset]} {best['metric']:.4f})")
    test_dataset = data.test_dataset or data.dataset
    results = {"dataset": test_dataset, "checkpoint": best_path if val_loader is not None else last_path,
               "splits": {}}
    for split in test_splits(test_dataset, data.test_root or data.root, data.test_splits, data.box):
        metrics, _, _ = evaluate(model, eval_loader(split, **loaders), split, **scoring)
        results["splits"][split.split] = metrics
        log(f"{test_dataset}/{split.split}: " + json.dumps(metrics))
    if distributed.is_main():
        write_json(os.path.join(out, "metrics.json"), results)
    distributed.cleanup()
    return results


if __name__ == "__main__":
    try:
        main(cli("Landmark fine-tuning (paper §5.2)")[0])
    except (formats.DatasetFormatError, FileNotFoundError) as e:   # one clear line, not a traceback
        raise SystemExit(f"landmarks.train: {e}")
