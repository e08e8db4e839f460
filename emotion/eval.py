"""Evaluate an emotion checkpoint on AffectNet (paper App. D.1, Table 12).

    python -m emotion.eval --config emotion/configs/affectnet.yaml data.root=DIR [eval.flip_va=true] \
        --checkpoint runs/NAME/last.pth [--split val] [--out DIR]

Writes predictions.npz and metrics.json (accuracy; valence and arousal RMSE, SAGR, PCC, CCC) into
--out (default: the checkpoint's folder); the metrics JSON is the last line of stdout.
"""
import os

from common import distributed
from common.backbone import build_backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from emotion.data import build_dataset, load_split
from emotion.engine import test_and_save
from emotion.model import EmotionNet


def main(cfg, checkpoint, split=None, out=None):
    info = distributed.init()
    data = cfg.data
    split = split or data.test_split
    test = build_dataset(load_split(data.root, split, data.num_classes), train=False, input_size=data.input_size,
                         box_scale=data.box_scale, augment={})
    model = EmotionNet(build_backbone(cfg.model.arch, "scratch"), data.num_classes)
    state = load_checkpoint(checkpoint)
    if "model" not in state:
        raise SystemExit(f"{checkpoint}: not an emotion.train checkpoint (no 'model' entry)")
    model.load_state_dict(state["model"])
    model.to(info.device)
    extra = {"dataset": "affectnet", "split": split, "num_classes": data.num_classes,
             "checkpoint": os.path.abspath(checkpoint), "epoch": state.get("epoch")}
    metrics = test_and_save(model, test, batch_size=cfg.eval.batch_size, workers=data.num_workers, device=info.device,
                            amp=cfg.train.amp and info.device.type == "cuda", flip_va=cfg.eval.flip_va,
                            out_dir=out or os.path.dirname(os.path.abspath(checkpoint)), extra=extra)
    distributed.cleanup()
    return metrics


if __name__ == "__main__":
    cfg, args = cli("Emotion evaluation (paper App. D.1)", extra_args=[
        ("--checkpoint", {"required": True, "help": "checkpoint to evaluate (our emotion.train file)"}),
        ("--split", {"choices": ["train", "val"], "help": "list to evaluate (default data.test_split)"}),
        ("--out", {"help": "folder for metrics.json / predictions.npz (default: the checkpoint's folder)"})])
    main(cfg, args.checkpoint, split=args.split, out=args.out)
