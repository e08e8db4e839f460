"""Representation probes of a pre-trained backbone (pretrain/probes.py; monitoring for paper §3.1, not a
paper protocol).

    python -m pretrain.eval --config pretrain/configs/swav_r50.yaml probe.root=PROBE_DIR \
        [probe.identity_root=IDENTITY_DIR] --checkpoint PATH

Loads the backbone strictly from any layout ``common.checkpoint`` recognises (ours, the FRL release,
SwAV, MoCo, torchvision), runs the probes the ``probe`` section configures (the same as pre-training
logs), prints the scores and their floors as JSON on the last line and writes ``metrics.json`` next to
the checkpoint.
"""
import os

import torch

from common.backbone import build_backbone
from common.config import cli
from common.finetune import write_metrics
from pretrain.probes import build_probes


def main(cfg, checkpoint: str) -> dict:
    probes = build_probes(cfg.probe)
    if probes is None:
        raise SystemExit("pretrain.eval needs probe.root=DIR (labels.csv + images) or probe.identity_root=DIR "
                         "(identity folders ROOT/<id>/<image>)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = build_backbone(cfg.model.arch, init=checkpoint).to(device)
    metrics = {**probes.run(backbone, device), "floors": probes.floors, "checkpoint": checkpoint}
    write_metrics(os.path.dirname(os.path.abspath(checkpoint)), metrics)
    return metrics


if __name__ == "__main__":
    config, args = cli("Representation probes of a pre-trained backbone",
                       extra_args=[("--checkpoint", {"required": True, "help": "checkpoint to evaluate"})])
    main(config, args.checkpoint)
