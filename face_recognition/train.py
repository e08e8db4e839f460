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
import os

import torch

from common import distributed as dist
from common import engine, finetune
from common.backbone import build_backbone
from common.checkpoint import export_torchvision, make_state, save_checkpoint, unwrap
from common.config import cli
from common.logger import log
from common.subsample import load_keys, save_keys
from face_recognition.data import (choose_subset, load_recordio, load_vggface2, recordio_training_set,
                                   vggface2_training_set)
from face_recognition.eval import benchmark_root, run_benchmarks
from face_recognition.model import FaceRecognitionModel


def training_keys(cfg, root, subset_path):
    """Sample keys of the training set: the split, or its few-shot subset (read back from
    ``subset_path`` when that file exists, so a resumed or repeated run uses the same images)."""
    if cfg.data.subset_file:
        return load_keys(cfg.data.subset_file)
    if cfg.data.fraction < 1.0 and os.path.isfile(subset_path):
        return load_keys(subset_path)
    index = load_recordio(root) if cfg.data.format == "recordio" else load_vggface2(root, cfg.data.split)
    if index["missing_landmarks"]:
        log(f"{index['missing_landmarks']} listed images have no landmark row and are left out")
    return choose_subset(index["paths"], index["identities"], fraction=cfg.data.fraction, seed=cfg.seed,
                         min_identity_fraction=cfg.data.min_identity_fraction,
                         identity_rule_max_fraction=cfg.data.identity_rule_max_fraction)


def cosface_forward(model, batch):
    """CosFace needs the labels in the forward pass (the margin is on the target logit)."""
    return model(batch["image"], batch["label"])


def cosface_loss(outputs, batch):
    """The model's CosFace loss, and the batch's training accuracy for the log."""
    loss, logits = outputs
    return loss, {"train_acc": (logits.argmax(1) == batch["label"]).double().mean()}


def main(cfg):
    cfg.out = cfg.out or os.path.join("runs", cfg.name)
    info = dist.init()
    device, world = info.device, info.world_size
    writer = finetune.start_run(cfg, "face_recognition.train", info, min_epochs=0)  # 0: evaluate the init
    last, subset_path = os.path.join(cfg.out, "last.pth"), os.path.join(cfg.out, "subset.txt")
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
    faces = dict(keys=keys, size=cfg.data.size, mean=cfg.data.mean, std=cfg.data.std, flip_prob=cfg.data.flip_prob)
    if cfg.data.format == "recordio":  # an insightface pack (train.rec / train.idx / property) in data.vggface2
        dataset, classes = recordio_training_set(root, **faces)
    else:
        dataset, classes = vggface2_training_set(root, split=cfg.data.split, **faces)
    loader = engine.make_loader(dataset, batch_size=local_bs, train=True, workers=cfg.data.num_workers,
                                seed=cfg.seed, drop_last=True)
    ipe = len(loader)
    if ipe == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of {local_bs} per process")
    lr = cfg.optim.lr * cfg.optim.batch_size / cfg.optim.lr_batch  # linear scaling from the paper's batch 512
    lrs = engine.lr_values("cosine", base_lr=lr, final_lr=cfg.optim.final_lr, epochs=max(cfg.optim.epochs, 1),
                           iters_per_epoch=ipe, warmup_epochs=cfg.optim.warmup_epochs)
    log(f"{len(dataset)} images of {len(classes)} identities (fraction {cfg.data.fraction}), global batch "
        f"{cfg.optim.batch_size} ({world} x {local_bs}), {ipe} iterations/epoch, lr {lr:g} (backbone "
        f"x{cfg.optim.backbone_lr_mult}), init {cfg.model.init}, device {device}, run {cfg.out}")

    model = FaceRecognitionModel(build_backbone(cfg.model.arch, cfg.model.init), len(classes),
                                 embedding_dim=cfg.model.embedding_dim, head=cfg.model.head,
                                 dropout=cfg.model.dropout, scale=cfg.loss.scale, margin=cfg.loss.margin)
    model = engine.prepare_model(model, mode="finetune", device=device, sync_bn=cfg.model.sync_bn)
    optimizer = engine.build_optimizer(model, cfg.optim, lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=engine.amp_dtype(cfg.amp, device) == torch.float16)
    identity = {"classes": classes, "iters_per_epoch": ipe}
    engine.fit(model, loader, optimizer, lrs, cosface_loss, info=info, out_dir=cfg.out, epochs=cfg.optim.epochs,
               mode="finetune", amp=cfg.amp, seed=cfg.seed, config=cfg, writer=writer,
               log_every=cfg.log_every_iters, forward=cosface_forward, scaler=scaler, identity=identity)
    if dist.is_main() and not os.path.isfile(last):  # optim.epochs=0: the initialisation itself
        save_checkpoint(last, make_state(model, optimizer, scaler, config=cfg, **identity))
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
