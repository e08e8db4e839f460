"""Fine-tune (or linearly adapt) a pre-trained ResNet for AU intensity on DISFA / BP4D (paper §5.3, App. A.2).

    python -m au_intensity.train --config au_intensity/configs/disfa.yaml data.root=DIR data.fold=0 out=runs/NAME
    torchrun --nproc_per_node=2 -m au_intensity.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, best.pth (with a validation
split), predictions.npz, metrics.json}; resumes from last.pth when it exists. DISFA folds are
separate runs; ``python -m au_intensity.eval --pool`` scores their pooled test predictions.
"""

from au_intensity.data import LAYOUT_KEYS, build_dataset, check_boxes, split_dataset
from au_intensity.engine import evaluate, test_and_save
from au_intensity.model import AUIntensityNet, au_l2_loss
from common import distributed, engine, finetune
from common.backbone import build_backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from common.logger import log


def l2_loss(outputs, batch):
    """The paper's l2 regression loss on a training batch (``common.engine``'s loss_fn)."""
    return au_l2_loss(outputs, batch["target"]), {}


def main(cfg):
    info = distributed.init()
    device, out, data, optim, mode = info.device, cfg.out, cfg.data, cfg.optim, cfg.model.adaptation
    check_boxes(data)  # a missing face-box file (data.boxes) fails before the run folder is written
    writer = finetune.start_run(cfg, "au_intensity.train", info)

    layout = {k: data[k] for k in LAYOUT_KEYS}
    full = split_dataset("train", **layout)
    rows = finetune.select_training_keys(full.index.keys, fraction=data.fraction, seed=data.subset_seed,
                                         subset_file=data.subset_file, out_dir=out)
    train_set = build_dataset(full.index.select(rows), train=True, boxes_file=data.boxes, input_size=data.input_size,
                              box_scale=data.box_scale, augment=dict(cfg.aug))
    per_rank = optim.batch_size // info.world_size
    loader = engine.make_loader(train_set, batch_size=per_rank, train=True, workers=data.num_workers, seed=cfg.seed)
    val_set = split_dataset(data.val_split, **layout) if data.val_split else None
    amp = cfg.train.amp and device.type == "cuda"
    clip = tuple(cfg.eval.clip)

    val_loader = None if val_set is None else engine.make_loader(
        val_set, batch_size=cfg.eval.batch_size, train=False, workers=data.num_workers, seed=cfg.seed)

    def validate(net):
        """Mean ICC on the validation subjects selects best.pth."""
        metrics, _ = evaluate(net, val_loader, val_set.index, device=device, amp=amp, clip=clip)
        return {"icc_mean": metrics["icc_mean"], "mae_mean": metrics["mae_mean"]}

    model = AUIntensityNet(build_backbone(cfg.model.arch, cfg.model.init), len(full.index.aus))
    model = engine.prepare_model(model, mode=mode, device=device)
    optimizer = engine.build_optimizer(model, optim)
    lrs = engine.lr_values(optim.schedule, base_lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                           milestones=optim.milestones, gamma=optim.gamma)
    split_name = f"{data.dataset} fold {data.fold} ({data.fold_scheme})" if data.dataset == "disfa" else data.dataset
    log(f"{len(train_set)} training frames ({data.fraction:.3g} of {split_name} train; {full.index.counts}), "
        f"global batch {optim.batch_size} ({per_rank} x {info.world_size}), {len(loader)} iterations/epoch, "
        f"{optim.epochs} epochs, lr {optim.lr} (backbone x{optim.backbone_lr_mult}), {mode}")

    checkpoint = engine.fit(model, loader, optimizer, lrs, l2_loss, info=info, out_dir=out, epochs=optim.epochs,
                            mode=mode, amp=amp, seed=cfg.seed, config=cfg, writer=writer,
                            log_every=cfg.train.log_every, validate=None if val_set is None else validate,
                            select=None if val_set is None else "icc_mean",
                            eval_every=cfg.train.eval_every).checkpoint
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    record = {"dataset": data.dataset, "split": data.test_split, "fold": data.fold, "fold_scheme": data.fold_scheme,
              "fraction": data.fraction, "init": cfg.model.init, "adaptation": mode, "checkpoint": checkpoint,
              "train_frames": len(train_set)}
    metrics = test_and_save(model, split_dataset(data.test_split, **layout), batch_size=cfg.eval.batch_size,
                            workers=data.num_workers, device=device, amp=amp, clip=clip, out_dir=out, extra=record)
    distributed.cleanup()
    return metrics


if __name__ == "__main__":
    main(cli("AU intensity fine-tuning (paper §5.3)")[0])
