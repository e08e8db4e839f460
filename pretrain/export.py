"""Export a pre-trained backbone (paper §3.1 -> §4: the pre-trained ResNet-50 every task starts from).

    python -m pretrain.export --checkpoint runs/NAME/last.pth [--out DIR]

writes DIR/backbone.pth (our layout: {"model": {"backbone.*": ...}, "arch", "config"}, accepted by
``model.init=`` of every task) and DIR/backbone_torchvision.pth (a plain state dict that loads
with strict=True into torchvision's resnet with ``fc = nn.Identity()``). DIR defaults to the
checkpoint's folder. train.py calls ``export_backbone`` at the end of every run.
"""
import argparse
import os

from common.backbone import Backbone
from common.checkpoint import (backbone_arch, backbone_state_dict, export_torchvision, load_checkpoint,
                               save_checkpoint)


def export_backbone(state: dict, out_dir: str, source: str = "checkpoint") -> tuple:
    """Write both exports from a loaded checkpoint ``state`` (ours, or any layout common.checkpoint
    reads; the architecture is read from the tensors, as hubconf does); returns their paths."""
    sd = backbone_state_dict(state, source)
    arch = backbone_arch(sd)
    config = state.get("config") or {}
    model = config.get("model") or {}
    if model.get("arch", arch) != arch:
        raise ValueError(f"{source}: holds a {arch} backbone but its config says model.arch={model['arch']}")
    if model.get("norm", "batch") != "batch":
        raise ValueError(f"{source}: the model uses {model['norm']} norm; only BatchNorm "
                         f"backbones export to torchvision")
    backbone = Backbone(arch)
    try:
        backbone.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: not a {arch} backbone: {' '.join(str(e).split())}") from None
    ours = os.path.join(out_dir, "backbone.pth")
    tv = os.path.join(out_dir, "backbone_torchvision.pth")
    save_checkpoint(ours, {"model": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                           "arch": arch, "config": config})
    export_torchvision(backbone, tv)
    return ours, tv


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export the backbone of a pre-training checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="runs/NAME/last.pth")
    parser.add_argument("--out", default="", help="output folder (default: the checkpoint's folder)")
    args = parser.parse_args(argv)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    for path in export_backbone(load_checkpoint(args.checkpoint), out, args.checkpoint):
        print(path)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:   # one clear line naming the file, not a traceback
        raise SystemExit(f"pretrain.export: {e}")
