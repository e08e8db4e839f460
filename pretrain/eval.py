"""kNN evaluation of a pre-trained backbone (monitoring for paper §3.1; not a paper protocol).

    python -m pretrain.eval --config pretrain/configs/swav_r50.yaml knn.root=IDENTITY_DIR --checkpoint PATH

Loads the backbone strictly from any layout ``common.checkpoint`` recognises (ours, the FRL
release, SwAV, MoCo, torchvision), runs the leave-one-out kNN probe of ``pretrain/knn.py`` on
``knn.root`` (ROOT/<identity>/<image>), prints the metrics as JSON on the last line and writes
``metrics.json`` next to the checkpoint. Runs alone or under torchrun.
"""
import json
import os

from common import distributed as dist
from common.backbone import build_backbone
from common.config import cli
from pretrain.knn import knn_probe


def main(cfg, checkpoint: str) -> dict:
    info = dist.init()
    if not cfg.knn.root:
        raise ValueError("pretrain.eval needs knn.root=DIR (identity folders ROOT/<id>/<image>)")
    backbone = build_backbone(cfg.model.arch, init=checkpoint).to(info.device)
    local_bs = max(cfg.data.batch_size // info.world_size, 1)
    metrics = knn_probe(backbone, cfg.knn.root, size=cfg.knn.size, batch_size=local_bs, device=info.device,
                        rank=info.rank, world_size=info.world_size, k=cfg.knn.k)
    metrics["checkpoint"] = checkpoint
    if dist.is_main():
        path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "metrics.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        print(json.dumps(metrics, sort_keys=True), flush=True)
    dist.cleanup()
    return metrics


if __name__ == "__main__":
    config, args = cli("kNN evaluation of a pre-trained backbone",
                       extra_args=[("--checkpoint", {"required": True, "help": "checkpoint to evaluate"})])
    main(config, args.checkpoint)
