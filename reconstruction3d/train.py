"""Fine-tune a pre-trained ResNet with a spiral mesh decoder on 300W-LP (paper §5.5, Table 9, App. A.2).

    python -m reconstruction3d.train --config reconstruction3d/configs/300wlp.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=2 -m reconstruction3d.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, metrics.json, ced_florence.png}; resumes from
last.pth when it exists. There is no validation split (AFLW2000-3D is the test set and is never
used to pick a checkpoint): the last epoch is evaluated.
"""
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from common import distributed, finetune
from common.backbone import build_backbone
from common.checkpoint import make_state, restore, save_checkpoint
from common.config import cli
from common.files import write_json
from common.logger import log
from common.optim import cosine_schedule, param_groups, step_schedule
from common.subsample import load_keys, save_keys, subset_keys
from reconstruction3d import formats
from reconstruction3d.data import MeshAugment, MeshDataset, load_topology
from reconstruction3d.decoder import MeshRegressor, SpiralDecoder
from reconstruction3d.engine import evaluate_aflw2000, evaluate_florence, plot_ced, train_one_epoch
from reconstruction3d.mesh_sampling import build_hierarchy, default_cache_dir


def mesh_hierarchy(topology, *, factors, lengths, dilations, cache_dir):
    """The cached hierarchy of the template; rank 0 computes it (once per topology) while the others wait."""
    args = (topology.vertices, topology.faces, factors, lengths, dilations, cache_dir or default_cache_dir())
    hierarchy = build_hierarchy(*args) if distributed.is_main() else None
    distributed.barrier()
    return hierarchy or build_hierarchy(*args)


def build_model(*, arch, init, hierarchy, channels):
    """Backbone from ``init`` + a fresh spiral decoder on the hierarchy's levels."""
    backbone = build_backbone(arch, init)
    decoder = SpiralDecoder(backbone.num_features, hierarchy["spirals"], hierarchy["up"], channels)
    return MeshRegressor(backbone, decoder, len(hierarchy["vertices"][0]))


def build_optimizer(name, groups, *, lr, momentum):
    """SGD with momentum (paper App. A.2) or Adam (the synthetic CPU check, which has ~100 steps)."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ValueError(f"optim.name must be sgd or adam, got {name!r}")


def lr_schedule(*, schedule, lr, epochs, iters_per_epoch, warmup_epochs, milestones, gamma):
    """Per-iteration learning rates; step milestones are fractions of the run's epochs."""
    if schedule == "cosine":
        return cosine_schedule(lr, 0.0, epochs, iters_per_epoch, warmup_epochs=warmup_epochs)
    if schedule == "step":
        return step_schedule(lr, [m * epochs for m in milestones], gamma, epochs, iters_per_epoch,
                             warmup_epochs=warmup_epochs)
    raise ValueError(f"optim.schedule must be cosine or step, got {schedule!r}")


def few_shot(items, *, fraction, seed, subset_file="", save_to=None):
    """Paper §5 regimes (App. A.3: random images, labels ignored): a deterministic subset of the
    sorted keys, or the keys of ``subset_file``; written to ``save_to`` with its sha256."""
    if not subset_file and fraction >= 1.0:
        return items
    keys = load_keys(subset_file) if subset_file else subset_keys([k for k, _, _ in items], fraction, seed)
    where = {k: i for i, (k, _, _) in enumerate(items)}
    missing = [k for k in keys if k not in where]
    if missing:
        raise ValueError(f"{subset_file}: {len(missing)} keys are not 300W-LP samples, e.g. {missing[:3]}")
    if save_to:
        save_keys(save_to, keys)
    return [items[where[k]] for k in keys]


@torch.no_grad()
def mean_target(dataset, *, max_samples, seed, batch_size, num_workers):
    """Mean normalised mesh (V, 3) over a deterministic subset of un-augmented training crops."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:max_samples])
    loader = DataLoader(Subset(dataset, pick.tolist()), batch_size=batch_size, num_workers=num_workers)
    total, count = 0.0, 0
    for batch in loader:
        valid = batch["valid"]
        total = total + batch["target"][valid].double().sum(0)
        count += int(valid.sum())
    if count == 0:
        raise RuntimeError("no readable training image to compute the mean shape from")
    return (total / count).float()


def eval_loader(items, topology, bfm, *, input_size, box_scale, batch_size, num_workers, world_size, with_gt):
    dataset = MeshDataset(items, topology, bfm, input_size=input_size, box_scale=box_scale, with_gt=with_gt)
    sampler = DistributedSampler(dataset, shuffle=False) if world_size > 1 else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())


def evaluate_all(model, names, *, root, topology, bfm, cfg, device, world_size, amp):
    """{dataset: metrics} on the test sets ``names`` (aflw2000 | florence)."""
    results = {}
    for name in names:
        loader = eval_loader(formats.list_samples(name, root), topology, bfm, input_size=cfg.data.input_size,
                             box_scale=cfg.data.box_scale, batch_size=cfg.eval.batch_size,
                             num_workers=cfg.data.num_workers, world_size=world_size, with_gt=name == "aflw2000")
        if name == "aflw2000":
            results[name], _ = evaluate_aflw2000(model, loader, device=device, input_size=cfg.data.input_size,
                                                 landmark_ids=topology.landmark_ids, amp=amp)
        elif name == "florence":
            results[name], _ = evaluate_florence(
                model, loader, device=device, input_size=cfg.data.input_size, root=root, topology=topology,
                alignment=cfg.eval.florence_alignment, norm=cfg.eval.florence_norm, ced_max=cfg.eval.ced_max,
                amp=amp)
        else:
            raise ValueError(f"unknown test set {name!r}; expected aflw2000 or florence")
    return results


def main(cfg):
    info = distributed.init()
    device, out, data, optim, m = info.device, cfg.out, cfg.data, cfg.optim, cfg.model
    writer = finetune.start_run(cfg, "reconstruction3d.train", info)

    topology, bfm = load_topology(m.topology, data.root)
    hierarchy = mesh_hierarchy(topology, factors=m.factors, lengths=m.spiral_length, dilations=m.dilation,
                               cache_dir=m.mesh_cache)
    log(f"mesh levels {[len(v) for v in hierarchy['vertices']]} vertices (cache key {hierarchy['key'][:12]})")
    items = few_shot(formats.list_samples("300wlp", data.root), fraction=data.fraction, seed=data.subset_seed,
                     subset_file=data.subset_file,
                     save_to=os.path.join(out, "subset_keys.txt") if distributed.is_main() else None)
    crops = dict(input_size=data.input_size, box_scale=data.box_scale)
    augment = MeshAugment(rotation=cfg.aug.rotation, scale=cfg.aug.scale, translation=cfg.aug.translation)
    train_set = MeshDataset(items, topology, bfm, augment=augment, **crops)
    per_rank = optim.batch_size // info.world_size
    sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed) if info.world_size > 1 else None
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, shuffle=sampler is None,
                        generator=generator, num_workers=data.num_workers, drop_last=len(train_set) > per_rank,
                        pin_memory=device.type == "cuda")

    model = build_model(arch=m.arch, init=m.init, hierarchy=hierarchy, channels=m.channels)
    model = distributed.convert_sync_bn(model).to(device)
    optimizer = build_optimizer(optim.name, param_groups(model, weight_decay=optim.weight_decay), lr=optim.lr,
                                momentum=optim.momentum)
    lr_values = lr_schedule(schedule=optim.schedule, lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                            warmup_epochs=optim.warmup_epochs, milestones=optim.milestones, gamma=optim.gamma)
    log(f"{len(train_set)} training faces ({data.fraction:.3g} of 300W-LP), global batch {optim.batch_size} "
        f"({per_rank} x {info.world_size}), {len(loader)} iterations/epoch, {optim.epochs} epochs, lr {optim.lr}")

    start_epoch, last_path = 0, os.path.join(out, "last.pth")
    if os.path.isfile(last_path):
        state = restore(last_path, model, optimizer)
        if state.get("hierarchy_key") != hierarchy["key"]:
            raise ValueError(f"{last_path} was trained on another mesh hierarchy (key {state.get('hierarchy_key')})")
        start_epoch = state["epoch"]
        log(f"resumed from {last_path} at epoch {start_epoch}")
    else:
        model.mean_shape.copy_(mean_target(MeshDataset(items, topology, bfm, **crops), max_samples=data.mean_samples,
                                           seed=cfg.seed, batch_size=per_rank, num_workers=data.num_workers))
    ddp_model = distributed.wrap_ddp(model, info)
    amp = cfg.train.amp and device.type == "cuda"

    for epoch in range(start_epoch, optim.epochs):
        start = time.time()
        generator.manual_seed(cfg.seed * 100003 + epoch)                  # same order and worker seeds on resume
        torch.manual_seed(cfg.seed * 100003 + epoch * 1009 + info.rank)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(ddp_model, loader, optimizer, lr_values, epoch * len(loader), device=device,
                                epoch=epoch, amp=amp)
        record = {"epoch": epoch + 1, **stats, "time_s": time.time() - start}
        if stats["skipped_images"]:
            log(f"epoch {epoch + 1}: {stats['skipped_images']} unreadable images skipped")
        writer.write(record)
        log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if distributed.is_main():
            save_checkpoint(last_path, make_state(model, optimizer, epoch=epoch + 1, config=cfg,
                                                  iteration=(epoch + 1) * len(loader),
                                                  hierarchy_key=hierarchy["key"]))
        distributed.barrier()

    results = {"checkpoint": os.path.abspath(last_path)}
    results.update(evaluate_all(model, list(data.test_sets), root=data.root, topology=topology, bfm=bfm, cfg=cfg,
                                device=device, world_size=info.world_size, amp=amp))
    for name in data.test_sets:
        log(f"{name}: " + json.dumps({k: v for k, v in results[name].items() if k != "errors"}))
    if distributed.is_main():
        write_json(os.path.join(out, "metrics.json"), results)
        if "florence" in results:
            plot_ced({"ours": np.asarray(results["florence"]["errors"])}, os.path.join(out, "ced_florence.png"),
                     title=f"Florence ({cfg.eval.florence_norm} NME)", max_error=cfg.eval.ced_max)
    distributed.cleanup()
    return results


if __name__ == "__main__":
    main(cli("3D face reconstruction fine-tuning (paper §5.5)")[0])
