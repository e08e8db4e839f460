"""Fine-tune a pre-trained ResNet with a spiral mesh decoder on 300W-LP (paper §5.5, Table 9, App. A.2).

    python -m reconstruction3d.train --config reconstruction3d/configs/300wlp.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=2 -m reconstruction3d.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, metrics.json, ced_florence.png}; resumes from
last.pth when it exists. There is no validation split (AFLW2000-3D is the test set and is never
used to pick a checkpoint): the last epoch is evaluated.
"""
import json
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from common import distributed, engine, finetune
from common.backbone import build_backbone
from common.config import cli
from common.logger import log
from reconstruction3d import formats
from reconstruction3d.data import MeshAugment, MeshDataset, load_topology
from reconstruction3d.decoder import MeshRegressor, SpiralDecoder
from reconstruction3d.engine import evaluate_all, l1_loss, plot_ced
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


def main(cfg):
    info = distributed.init()
    device, out, data, optim, m = info.device, cfg.out, cfg.data, cfg.optim, cfg.model
    writer = finetune.start_run(cfg, "reconstruction3d.train", info)

    topology, bfm = load_topology(m.topology, data.root)
    hierarchy = mesh_hierarchy(topology, factors=m.factors, lengths=m.spiral_length, dilations=m.dilation,
                               cache_dir=m.mesh_cache)
    log(f"mesh levels {[len(v) for v in hierarchy['vertices']]} vertices (cache key {hierarchy['key'][:12]})")
    items = formats.list_samples("300wlp", data.root)
    rows = finetune.select_training_keys([k for k, _, _ in items], fraction=data.fraction, seed=data.subset_seed,
                                         subset_file=data.subset_file, out_dir=out)
    items = [items[i] for i in rows]
    crops = dict(input_size=data.input_size, box_scale=data.box_scale)
    augment = MeshAugment(rotation=cfg.aug.rotation, scale=cfg.aug.scale, translation=cfg.aug.translation)
    train_set = MeshDataset(items, topology, bfm, augment=augment, **crops)
    per_rank = optim.batch_size // info.world_size
    loader = engine.make_loader(train_set, batch_size=per_rank, train=True, workers=data.num_workers, seed=cfg.seed)

    model = build_model(arch=m.arch, init=m.init, hierarchy=hierarchy, channels=m.channels)
    model = engine.prepare_model(model, mode="finetune", device=device)
    optimizer = engine.build_optimizer(model, optim)
    lrs = engine.lr_values(optim.schedule, base_lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                           warmup_epochs=optim.warmup_epochs, milestones=optim.milestones, gamma=optim.gamma)
    log(f"{len(train_set)} training faces ({data.fraction:.3g} of 300W-LP), global batch {optim.batch_size} "
        f"({per_rank} x {info.world_size}), {len(loader)} iterations/epoch, {optim.epochs} epochs, lr {optim.lr} "
        f"(backbone x{optim.backbone_lr_mult})")
    if not os.path.isfile(os.path.join(out, "last.pth")):  # a resumed run restores the mean shape buffer
        model.mean_shape.copy_(mean_target(MeshDataset(items, topology, bfm, **crops), max_samples=data.mean_samples,
                                           seed=cfg.seed, batch_size=per_rank, num_workers=data.num_workers))

    def loss_fn(vertices, batch):
        """l1 vertex distance in the normalised crop frame (§5.5)."""
        return l1_loss(vertices, batch["target"], batch["valid"]), {}

    amp = cfg.train.amp and device.type == "cuda"
    result = engine.fit(model, loader, optimizer, lrs, loss_fn, info=info, out_dir=out, epochs=optim.epochs,
                        mode="finetune", amp=amp, seed=cfg.seed, config=cfg, writer=writer,
                        log_every=cfg.train.log_every, identity={"hierarchy_key": hierarchy["key"]})
    results = {"checkpoint": os.path.abspath(result.checkpoint)}
    results.update(evaluate_all(model, list(data.test_sets), root=data.root, topology=topology, bfm=bfm, cfg=cfg,
                                device=device, amp=amp))
    for name in data.test_sets:
        log(f"{name}: " + json.dumps({k: v for k, v in results[name].items() if k != "errors"}))
    finetune.write_metrics(out, results)
    if distributed.is_main() and "florence" in results:
        plot_ced({"ours": np.asarray(results["florence"]["errors"])}, os.path.join(out, "ced_florence.png"),
                 title=f"Florence ({cfg.eval.florence_norm} NME)", max_error=cfg.eval.ced_max)
    distributed.cleanup()
    return results


if __name__ == "__main__":
    main(cli("3D face reconstruction fine-tuning (paper §5.5)")[0])
