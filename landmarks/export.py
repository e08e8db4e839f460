"""Export the backbone of a landmark run as a torchvision state dict (paper Table 3, "Sup. (300W)").

    python -m landmarks.export --checkpoint runs/landmarks/300w_1.0_scratch/last.pth --out runs/pretrained/sup_300w.pth

The file loads with strict=True into torchvision's ResNet whose fc is nn.Identity(), and as
``model.init=PATH`` in every task (common.checkpoint recognises the torchvision layout).
"""
import argparse

from common.backbone import Backbone
from common.checkpoint import backbone_state_dict, export_torchvision, load_checkpoint


def export_backbone(checkpoint, out):
    """Write the backbone of our landmarks ``checkpoint`` to ``out``; returns the arch name."""
    state = load_checkpoint(checkpoint)
    arch = ((state.get("config") or {}).get("model") or {}).get("arch")
    if arch is None:
        raise ValueError(f"{checkpoint}: no config.model.arch; is it a landmarks.train checkpoint?")
    backbone = Backbone(arch)
    backbone.load_state_dict(backbone_state_dict(state, str(checkpoint)), strict=True)
    export_torchvision(backbone, out)
    return arch


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m landmarks.export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="landmarks run checkpoint (last.pth / best.pth)")
    parser.add_argument("--out", required=True, help="output .pth (torchvision ResNet state dict, no fc)")
    args = parser.parse_args(argv)
    arch = export_backbone(args.checkpoint, args.out)
    print(f"exported the {arch} backbone of {args.checkpoint} to {args.out}")


if __name__ == "__main__":
    main()
