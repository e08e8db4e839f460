"""Pre-training learns (issue 17): a short SwAV run of the CPU regime (pretrain/configs/demo.yaml, at 32 px
and batch 32) on 1,024 small-preset faces must do its own task on faces it never saw.

The held-out check is SwAV's task itself: two views of each of 480 probe faces (other identities, drawn once
with the training augmentation), Sinkhorn-assigned to the prototypes over the set; the fraction whose two
views land on the same prototype (pretrain.probes.cluster_agreement). Measured (2 epochs, 64 steps, seed 7
data): 0.44 against 0.11 for the same network at its random init. The same run with
- Sinkhorn replaced by uniform codes: loss pinned at ln K, the collapse guard stops it (exit 3);
- the loss sign flipped: 0.20;
- both views the same crop (augmentation broken): 0.12;
so each fails here (the run must finish uncollapsed and gain 0.15 over the random init).
"""
import json
import os
import subprocess
import sys

import torch

from common.checkpoint import load_checkpoint
from common.config import load_config
from common.logger import read_jsonl
from pretrain.probes import ProbeSet, augmented_views, cluster_agreement
from pretrain.train import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "pretrain", "configs", "demo.yaml")
CPU_SCALE = ["data.batch_size=32", "aug.crop_sizes=[32,16]", "swav.queue_length=256", "optim.epochs=2",
             "probe.size=32", "probe.every_iters=0", "collapse.patience_iters=30", "checkpoint_every_iters=0",
             "export_at_end=false", "log_every_iters=8"]


def _model(cfg):
    torch.manual_seed(cfg.seed)  # the run's own random init
    return build_model(method="swav", arch=cfg.model.arch, init="scratch", norm=cfg.model.norm,
                       hidden_dim=cfg.model.hidden_dim, out_dim=cfg.model.out_dim, n_prototypes=cfg.swav.n_prototypes)


def test_swav_does_its_task_on_held_out_faces_far_better_than_its_random_init(small_preset, tmp_path):
    data = small_preset("unlabelled", "probe")
    out = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FACEREP_PROGRESS": "0", "PYTHONPATH": ROOT}
    res = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", CONFIG, f"out={out}",
                          f"data.root={data / 'unlabelled' / 'images'}", f"probe.root={data / 'probe'}", *CPU_SCALE],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        summary = json.load(f)
    assert summary["collapsed"] is False
    assert [r["step"] for r in read_jsonl(os.path.join(out, "log.jsonl")) if "probe" in r] == [0, 64]

    cfg = load_config(CONFIG, CPU_SCALE)
    probe_faces = ProbeSet.from_labels_csv(str(data / "probe"), 32).images
    views = augmented_views(probe_faces, size=32, scale=cfg.aug.crop_scales[0], color_strength=cfg.aug.color_strength)
    random_init = cluster_agreement(_model(cfg), views)
    trained = _model(cfg)
    trained.load_state_dict(load_checkpoint(os.path.join(out, "last.pth"))["model"])
    learned = cluster_agreement(trained, views)
    assert learned > random_init + 0.15, (learned, random_init)
