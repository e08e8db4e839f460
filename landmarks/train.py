"""Fine-tune (or linearly adapt) a pre-trained ResNet for facial landmarks (paper §5.2, App. A.2).

    python -m landmarks.train --config landmarks/configs/300w.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=N -m landmarks.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, best.pth, metrics.json};
resumes from last.pth when it exists. The loop, resume and best-checkpoint rule are ``common.engine``'s.
"""
import json

from common import distributed, engine, finetune
from common.backbone import build_backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from common.landmark_schemes import flip_permutation
from common.logger import log
from landmarks import formats, scores
from landmarks.data import LandmarkDataset, train_augment
from landmarks.engine import eval_loader, evaluate, gt_targets, heatmap_loss, test_splits
from landmarks.heatmap_head import LandmarkModel


def build_model(*, arch, init, n_points, head_width):
    """Backbone from ``init`` + a fresh heatmap head."""
    return LandmarkModel(build_backbone(arch, init), n_points, head_width)


def main(cfg):
    info = distributed.init()
    device, out, data, optim, aug, mode = info.device, cfg.out, cfg.data, cfg.optim, cfg.aug, cfg.model.adaptation
    writer = finetune.start_run(cfg, "landmarks.train", info)

    n_points = formats.N_POINTS[data.dataset]
    full = formats.load_split(data.dataset, data.root, data.train_split, data.box)
    samples = full.select(finetune.select_training_keys(full.keys, fraction=data.fraction, seed=data.subset_seed,
                                                        subset_file=data.subset_file, out_dir=out))
    augment = train_augment(rotation=aug.rotation, scale=aug.scale, flip_prob=aug.flip_prob, n_points=n_points)
    train_set = LandmarkDataset(samples, input_size=data.input_size, box_scale=data.box_scale,
                                augment=augment, color_scale=aug.color_scale)
    per_rank = optim.batch_size // info.world_size
    loader = engine.make_loader(train_set, batch_size=per_rank, train=True, workers=data.num_workers, seed=cfg.seed)
    amp = cfg.train.amp and device.type == "cuda"
    crops = dict(input_size=data.input_size, box_scale=data.box_scale, batch_size=per_rank,
                 workers=data.num_workers)
    scoring = dict(device=device, input_size=data.input_size, amp=amp, decode=cfg.test.decode,
                   flip_perm=flip_permutation(n_points) if cfg.test.flip_test else None)
    val = formats.load_split(data.dataset, data.root, data.val_split, data.box) if data.val_split else None

    def validate(net):
        """The dataset's primary NME on the validation split selects best.pth."""
        return evaluate(net, eval_loader(val, **crops), val, **scoring)[0]

    model = build_model(arch=cfg.model.arch, init=cfg.model.init, n_points=n_points, head_width=cfg.model.head_width)
    model = engine.prepare_model(model, mode=mode, device=device)
    optimizer = engine.build_optimizer(model, optim)
    lrs = engine.lr_values(optim.schedule, base_lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                           milestones=optim.milestones, gamma=optim.gamma)
    targets = gt_targets(input_size=data.input_size, heatmap_size=data.heatmap_size, sigma=data.sigma)
    log(f"{len(train_set)} training faces ({data.fraction:.3g} of {data.dataset}/{data.train_split}), "
        f"global batch {optim.batch_size} ({per_rank} x {info.world_size}), {len(loader)} iterations/epoch, "
        f"{optim.epochs} epochs, lr {optim.lr} (backbone x{optim.backbone_lr_mult}), {mode}")

    def loss_fn(heatmaps, batch):
        """Pixel-wise l2 against Gaussians on the augmented ground truth (App. A.2)."""
        return heatmap_loss(heatmaps, targets(batch, device), batch["valid"]), {}

    result = engine.fit(model, loader, optimizer, lrs, loss_fn, info=info, out_dir=out, epochs=optim.epochs,
                        mode=mode, amp=amp, seed=cfg.seed, config=cfg, writer=writer, log_every=cfg.train.log_every,
                        validate=validate if val is not None else None,
                        select=scores.PRIMARY[data.dataset] if val is not None else None,
                        eval_every=cfg.train.eval_every)
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    test_dataset = data.test_dataset or data.dataset
    results = {"dataset": test_dataset, "checkpoint": result.checkpoint, "splits": {}}
    for split in test_splits(test_dataset, data.test_root or data.root, data.test_splits, data.box):
        results["splits"][split.split] = evaluate(model, eval_loader(split, **crops), split, **scoring)[0]
        log(f"{test_dataset}/{split.split}: " + json.dumps(results["splits"][split.split]))
    finetune.write_metrics(out, results)
    distributed.cleanup()
    return results


if __name__ == "__main__":
    try:
        main(cli("Landmark fine-tuning (paper §5.2)")[0])
    except (formats.DatasetFormatError, FileNotFoundError) as e:   # one clear line, not a traceback
        raise SystemExit(f"landmarks.train: {e}")
