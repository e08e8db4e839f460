"""Fine-tune (or linearly adapt) a pre-trained ResNet for emotion recognition on AffectNet (paper App. A.2, D.1).

    python -m emotion.train --config emotion/configs/affectnet.yaml data.root=DIR out=runs/NAME
    torchrun --nproc_per_node=N -m emotion.train --config ... key=value ...

Writes runs/NAME/{config.yaml, log.jsonl, subset_keys.txt, last.pth, predictions.npz, metrics.json};
resumes from last.pth when it exists. AffectNet's validation list is the test set (its test set is
not released), so no checkpoint is selected on it: the last epoch is tested.
"""

from common import distributed, engine, finetune
from common.backbone import build_backbone
from common.config import cli
from common.logger import log
from emotion.data import build_dataset, load_split, select
from emotion.engine import test_and_save
from emotion.model import EmotionLoss, EmotionNet


def main(cfg):
    info = distributed.init()
    device, out, data, optim, mode = info.device, cfg.out, cfg.data, cfg.optim, cfg.model.adaptation
    writer = finetune.start_run(cfg, "emotion.train", info)

    full = load_split(data.root, "train", data.num_classes)
    rows = finetune.select_training_keys(full["keys"], fraction=data.fraction, seed=data.subset_seed,
                                         subset_file=data.subset_file, out_dir=out)
    train_set = build_dataset(select(full, rows), train=True, input_size=data.input_size, box_scale=data.box_scale,
                              augment=dict(cfg.aug))
    per_rank = optim.batch_size // info.world_size
    loader = engine.make_loader(train_set, batch_size=per_rank, train=True, workers=data.num_workers, seed=cfg.seed)
    criterion = EmotionLoss(ce_weight=cfg.loss.ce_weight, rmse_weight=cfg.loss.rmse_weight,
                            ccc_weight=cfg.loss.ccc_weight)

    def loss_fn(outputs, batch):
        return criterion(outputs, batch["expression"], batch["valence"].float(), batch["arousal"].float(),
                         batch["va_valid"])

    model = engine.prepare_model(EmotionNet(build_backbone(cfg.model.arch, cfg.model.init), data.num_classes),
                                 mode=mode, device=device)
    optimizer = engine.build_optimizer(model, optim)
    lrs = engine.lr_values(optim.schedule, base_lr=optim.lr, epochs=optim.epochs, iters_per_epoch=len(loader),
                           milestones=optim.milestones, gamma=optim.gamma)
    log(f"{len(train_set)} training faces ({data.fraction:.3g} of AffectNet training.csv; dropped "
        f"{full['dropped']}), {data.num_classes} classes, global batch {optim.batch_size} ({per_rank} x "
        f"{info.world_size}), {len(loader)} iterations/epoch, {optim.epochs} epochs, lr {optim.lr} "
        f"(backbone x{optim.backbone_lr_mult}), loss weights {cfg.loss.to_dict()}, {mode}")

    amp = cfg.train.amp and device.type == "cuda"
    checkpoint = engine.fit(model, loader, optimizer, lrs, loss_fn, info=info, out_dir=out, epochs=optim.epochs,
                            mode=mode, amp=amp, seed=cfg.seed, config=cfg, writer=writer,
                            log_every=cfg.train.log_every).checkpoint
    test = build_dataset(load_split(data.root, data.test_split, data.num_classes), train=False,
                         input_size=data.input_size, box_scale=data.box_scale, augment={})
    record = {"dataset": "affectnet", "split": data.test_split, "num_classes": data.num_classes,
              "fraction": data.fraction, "init": cfg.model.init, "adaptation": mode, "checkpoint": checkpoint,
              "train_images": len(train_set), "loss_weights": cfg.loss.to_dict()}
    metrics = test_and_save(model, test, batch_size=cfg.eval.batch_size, workers=data.num_workers, device=device,
                            amp=amp, flip_va=cfg.eval.flip_va, out_dir=out, extra=record)
    distributed.cleanup()
    return metrics


if __name__ == "__main__":
    main(cli("Emotion recognition fine-tuning (paper App. D.1)")[0])
