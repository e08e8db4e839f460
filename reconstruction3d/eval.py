"""Evaluate a 3D reconstruction checkpoint: AFLW2000-3D NME (Table 9) or Florence error curves (App. D.2, Fig. 6).

    python -m reconstruction3d.eval --config reconstruction3d/configs/300wlp.yaml --checkpoint runs/NAME/last.pth \
        --dataset {aflw2000,florence} [--out DIR] [--mean-shape-baseline] [key=value ...]

The data root, topology and mesh settings come from the config (and its overrides). Updates the
dataset's entry of OUT/metrics.json (OUT defaults to the checkpoint's folder), writes
OUT/ced_florence.png for Florence, and prints the metrics as JSON on the last line of stdout.
``--mean-shape-baseline`` zeroes the decoder's output layer, so every face gets the training mean
shape placed in its crop: the floor a trained model must beat.
"""
import json
import os

import numpy as np
import torch

from common import distributed
from common.backbone import Backbone
from common.checkpoint import load_checkpoint
from common.config import cli
from common.files import write_json
from common.logger import log
from reconstruction3d.data import load_topology
from reconstruction3d.decoder import MeshRegressor, SpiralDecoder
from reconstruction3d.engine import evaluate_all, plot_ced
from reconstruction3d.train import mesh_hierarchy


def load_model(checkpoint, *, arch, channels, hierarchy, mean_shape_baseline=False):
    """The MeshRegressor of ``checkpoint`` on ``hierarchy`` (checked against the checkpoint's key);
    ``mean_shape_baseline`` zeroes the output layer so that it predicts the mean shape."""
    backbone = Backbone(arch)
    decoder = SpiralDecoder(backbone.num_features, hierarchy["spirals"], hierarchy["up"], channels)
    model = MeshRegressor(backbone, decoder, len(hierarchy["vertices"][0]))
    state = load_checkpoint(checkpoint)
    if "model" not in state:
        raise ValueError(f"{checkpoint}: not a reconstruction3d checkpoint (no 'model' entry)")
    if state.get("hierarchy_key") != hierarchy["key"]:
        raise ValueError(f"{checkpoint}: trained on mesh hierarchy {state.get('hierarchy_key')}, but the "
                         f"config's topology and mesh settings give {hierarchy['key']}")
    model.load_state_dict(state["model"], strict=True)
    if mean_shape_baseline:
        torch.nn.init.zeros_(model.decoder.head.linear.weight)
        torch.nn.init.zeros_(model.decoder.head.linear.bias)
    return model


def main(cfg, args):
    info = distributed.init()
    m, data = cfg.model, cfg.data
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    topology, bfm = load_topology(m.topology, data.root)
    hierarchy = mesh_hierarchy(topology, factors=m.factors, lengths=m.spiral_length, dilations=m.dilation,
                               cache_dir=m.mesh_cache)
    model = load_model(args.checkpoint, arch=m.arch, channels=m.channels, hierarchy=hierarchy,
                       mean_shape_baseline=args.mean_shape_baseline).to(info.device)
    amp = cfg.train.amp and info.device.type == "cuda"
    results = evaluate_all(model, [args.dataset], root=data.root, topology=topology, bfm=bfm, cfg=cfg,
                           device=info.device, amp=amp)
    metrics = {"checkpoint": os.path.abspath(args.checkpoint), "mean_shape_baseline": args.mean_shape_baseline,
               **results[args.dataset]}
    if distributed.is_main():
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "metrics.json")
        merged = {}
        if os.path.isfile(path):
            with open(path) as f:
                merged = json.load(f)
        key = args.dataset + ("_mean_shape" if args.mean_shape_baseline else "")
        merged[key] = metrics
        write_json(path, merged)
        if args.dataset == "florence":
            plot_ced({"ours": np.asarray(metrics["errors"])}, os.path.join(out, "ced_florence.png"),
                     title=f"Florence ({metrics['normaliser']} NME)", max_error=cfg.eval.ced_max)
        log(f"{args.dataset}: " + json.dumps({k: v for k, v in metrics.items() if k != "errors"}))
        print(json.dumps({"dataset": args.dataset, **metrics}, sort_keys=True), flush=True)
    distributed.cleanup()
    return metrics


def parse(argv=None):
    """(cfg, args) from ``--config``, the flags below and key=value overrides."""
    return cli("3D reconstruction evaluation (paper §5.5, App. D.2)", extra_args=[
        ("--checkpoint", dict(required=True, help="a reconstruction3d checkpoint (last.pth)")),
        ("--dataset", dict(choices=["aflw2000", "florence"], default="aflw2000", help="test set")),
        ("--out", dict(help="output folder (default: the checkpoint's folder)")),
        ("--mean-shape-baseline", dict(action="store_true", help="evaluate the mean shape instead")),
    ], argv=argv)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main(*parse())
