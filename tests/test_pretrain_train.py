"""End-to-end pre-training runs on the synthetic unlabelled faces (pretrain/train.py), on CPU.

- 2 gloo processes give the losses of 1 process on the same global batch. BatchNorm would differ
  (per-process batch statistics; SyncBatchNorm is CUDA-only), so these runs use model.norm=group
  (GroupNorm, batch-independent); the Sinkhorn all-reduces, queue, sampler and gradient averaging
  are what is compared.
- A SIGKILLed run resumed from last.pth logs the same losses as an uninterrupted run.
- A run over a folder with corrupt files logs how many it skipped, lowers the loss below ln K,
  runs the probes at step 0, every N steps and at the end (also through pretrain.eval), and exports
  a backbone that loads strictly into torchvision.
- A run driven into collapse on purpose stops with exit code 3 and the remedies (or, with
  collapse.on_collapse=warn, finishes and records it).
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from common.backbone import build_backbone
from common.checkpoint import load_checkpoint
from common.config import load_config
from common.logger import read_jsonl
from pretrain.collapse import CollapseGuard
from pretrain.train import train_one_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "pretrain", "configs", "synthetic.yaml")
# GroupNorm, 2 epochs x 4 iterations of batch 8, queue (2 batches) from epoch 0, prototypes frozen 3 steps
SMALL = ["model.norm=group", "data.batch_size=8", "aug.crop_sizes=[32,16]", "swav.queue_length=16",
         "swav.queue_start_epoch=0", "swav.freeze_prototypes_iters=3", "optim.epochs=2",
         "checkpoint_every_iters=2", "export_at_end=false"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "FACEREP_PROGRESS": "0", "PYTHONPATH": ROOT}


def _cmd(args, out, nproc=1):
    if nproc == 1:
        launch = [sys.executable, "-m", "pretrain.train"]
    else:  # --standalone: torchrun picks a free port itself (no race with other tests)
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                  "-m", "pretrain.train"]
    return launch + ["--config", CONFIG, f"out={out}"] + list(args)


def _run(args, out, nproc=1):
    res = subprocess.run(_cmd(args, out, nproc), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _records(out):
    return read_jsonl(os.path.join(out, "log.jsonl"))


def _step_losses(records):
    return {r["step"]: r["loss"] for r in records if "loss" in r and "step" in r}


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """The synthetic unlabelled set (24 faces, of which 3 unreadable and 2 grayscale / CMYK), and
    VGGFace2's identity folders for the kNN probe."""
    root = tmp_path_factory.mktemp("synthetic")
    subprocess.run([sys.executable, "-m", "common.synthetic", "--out", str(root), "--preset", "tiny",
                    "--only", "unlabelled", "vggface2"], cwd=ROOT, env=_env(), check=True, capture_output=True,
                   timeout=300)
    with open(root / "manifest.json") as f:
        corrupt = json.load(f)["datasets"]["unlabelled"]["corrupt"]
    folder = root / "unlabelled"
    unreadable = {str(folder / corrupt[k]) for k in ("zero_byte", "truncated", "not_an_image")}
    paths = sorted(str(p) for p in (folder / "images").rglob("*.jpg"))
    readable = [p for p in paths if p not in unreadable]
    (root / "readable32.txt").write_text("\n".join((readable * 2)[:32]) + "\n")  # 4 batches of 8
    (root / "all_x4.txt").write_text("\n".join(paths * 4) + "\n")  # 96 entries, 12 unreadable
    ids = root / "VGGFace2" / "train"
    return {"root": root, "folder": str(folder), "n_unreadable": len(unreadable), "n": len(paths),
            "ids": str(ids), "n_id_images": len(list(ids.rglob("*.jpg"))), "n_ids": len(list(ids.iterdir()))}


@pytest.fixture(scope="module")
def reference(faces, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref"))
    _run(SMALL + [f"data.root={faces['root'] / 'readable32.txt'}"], out)
    return _step_losses(_records(out))


def test_two_gloo_processes_match_one_process(faces, reference, tmp_path):
    out = str(tmp_path / "ddp")
    _run(SMALL + [f"data.root={faces['root'] / 'readable32.txt'}", "data.num_workers=1"], out, nproc=2)
    records = _records(out)
    losses = _step_losses(records)
    assert sorted(losses) == sorted(reference) == list(range(8))
    np.testing.assert_allclose([losses[s] for s in range(8)], [reference[s] for s in range(8)], rtol=0, atol=1e-5)
    assert len(set(round(v, 4) for v in losses.values())) > 4  # losses do change from step to step
    epochs = [r for r in records if "skipped" in r]
    assert [(r["images"], r["skipped"]) for r in epochs] == [(32, 0), (32, 0)]


def test_sigkill_mid_epoch_then_resume_gives_the_same_losses(faces, reference, tmp_path):
    out = str(tmp_path / "killed")
    args = SMALL + [f"data.root={faces['root'] / 'readable32.txt'}"]
    proc = subprocess.Popen(_cmd(args, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log_path = os.path.join(out, "log.jsonl")
    deadline = time.time() + 300
    try:  # step 2 is logged right after the checkpoint of iteration 2 (mid epoch 0) was written
        while not (os.path.exists(log_path) and 2 in _step_losses(read_jsonl(log_path))):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run did not reach step 2"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    resume_at = load_checkpoint(os.path.join(out, "last.pth"))["iteration"]
    assert resume_at % 4 != 0, f"killed too late: the checkpoint is at an epoch end ({resume_at})"
    _run(args, out)
    records = _records(out)
    starts = [i for i, r in enumerate(records) if r.get("event") == "resume"]
    assert len(starts) == 1 and records[starts[0]]["step"] == resume_at
    after = _step_losses(records[starts[0]:])
    assert sorted(after) == list(range(resume_at, 8))
    np.testing.assert_allclose([after[s] for s in sorted(after)], [reference[s] for s in sorted(after)],
                               rtol=1e-6, atol=0)
    state = load_checkpoint(os.path.join(out, "last.pth"))
    assert state["iteration"] == 8 and state["queue"]["buffer"].shape == (1, 2, 16, 16)


def test_swav_learns_on_synthetic_faces_skips_corrupt_files_and_exports(faces, tmp_path):
    """Mild augmentation and two 32-px crops so that 36 CPU steps are enough to learn."""
    out = str(tmp_path / "learn")
    _run([f"data.root={faces['root'] / 'all_x4.txt'}", "data.num_workers=2", "optim.epochs=6",
          "aug.crop_sizes=[32,16]", "aug.crop_counts=[2,0]", "aug.crop_scales=[[0.6,1.0],[0.2,0.4]]",
          "aug.color_strength=0.1", "swav.n_prototypes=8", "checkpoint_every_iters=0",
          f"probe.identity_root={faces['ids']}", "probe.every_iters=20", "probe.size=32", "probe.k=3"], out)
    records = _records(out)
    epochs = [r for r in records if "skipped" in r]
    assert len(epochs) == 6
    probes = [r for r in records if "probe" in r]
    assert [r["step"] for r in probes] == [0, 20, 36]  # step 0, every 20 steps, the end (6 x 6 steps)
    assert all(0.0 <= r["probe"]["identity_knn"] <= 1.0 for r in probes)
    assert probes[0]["probe_floors"] == {"identity_knn": 1 / faces["n_ids"]}
    with open(os.path.join(out, "metrics.json")) as f:
        summary = json.load(f)
    assert summary["collapsed"] is False and summary["probes"]["final"]["step"] == 36
    assert summary["probes"]["step0"]["identity_knn"] == probes[0]["probe"]["identity_knn"]
    assert 0 < summary["probe_fraction"] < 1 and os.path.isfile(os.path.join(out, "probes.png"))
    evaluated = subprocess.run([sys.executable, "-m", "pretrain.eval", "--config", CONFIG,
                                f"probe.identity_root={faces['ids']}", "probe.size=32", "probe.k=3",
                                "--checkpoint", os.path.join(out, "last.pth")],
                               cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == metrics
    assert metrics["identity_knn"] == probes[-1]["probe"]["identity_knn"]  # same backbone, same probe
    n_bad = 4 * faces["n_unreadable"]  # each unreadable file is listed 4 times
    assert all(r["skipped"] == n_bad and r["images"] == 4 * faces["n"] - n_bad for r in epochs)
    ln_k = math.log(8)
    assert epochs[0]["loss"] > ln_k  # starts above the collapse value ...
    assert epochs[-1]["loss"] < 0.8 * ln_k  # ... and ends clearly below it

    state = load_checkpoint(os.path.join(out, "last.pth"))
    tv = torchvision.models.resnet18()
    tv.fc = nn.Identity()
    tv.load_state_dict(torch.load(os.path.join(out, "backbone_torchvision.pth"), weights_only=True), strict=True)
    assert torch.equal(tv.layer4[1].bn2.running_var, state["model"]["backbone.layer4.1.bn2.running_var"])
    ours = build_backbone("resnet18", init=os.path.join(out, "backbone.pth"))
    assert torch.equal(ours.conv1.weight, state["model"]["backbone.conv1.weight"])
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ours.eval()(x), tv.eval()(x), atol=1e-5)


def test_moco_runs_fills_its_queue_and_checkpoints_the_key_encoder(faces, tmp_path):
    out = str(tmp_path / "moco")
    _run(["method=moco", f"data.root={faces['root'] / 'readable32.txt'}", "data.batch_size=8",
          "aug.crop_sizes=[32,16]", "aug.crop_counts=[2,0]", "aug.crop_scales=[[0.2,1.0],[0.2,1.0]]",
          "aug.color_strength=0.5", "optim.name=sgd", "optim.lr=0.03", "optim.final_lr=0.0",
          "optim.weight_decay=1e-4", "optim.epochs=1", "moco.queue_size=20", "export_at_end=false"], out)
    losses = _step_losses(_records(out))
    assert sorted(losses) == [0, 1, 2, 3] and all(math.isfinite(v) for v in losses.values())
    state = load_checkpoint(os.path.join(out, "last.pth"))
    assert state["moco"]["ptr"] == 32 % 20 and state["moco"]["queue"].shape == (20, 16)
    assert torch.allclose(state["moco"]["queue"].norm(dim=1), torch.ones(20), atol=1e-5)
    assert "backbone.conv1.weight" in state["moco"]["key_model"]
    assert not torch.equal(state["moco"]["key_model"]["backbone.conv1.weight"], state["model"]["backbone.conv1.weight"])


class _NanModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    cfg = load_config(CONFIG, [f"out={tmp_path}"])
    model = _NanModel()
    batches = [([torch.zeros(2, 3, 4, 4)], 0)] * 3
    calls = []

    def loss_fn(crops, epoch):
        calls.append(1)
        return model.w.sum() * (float("nan") if len(calls) == 2 else 1.0), torch.eye(2)

    with pytest.raises(FloatingPointError, match=r"step 6 \(epoch 1, iteration 1\)"):
        train_one_epoch(cfg, model=model, loss_fn=loss_fn, loader=batches,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        scaler=torch.amp.GradScaler("cpu", enabled=False), lrs=np.full(20, 0.1), epoch=1,
                        start_iter=0, iters_per_epoch=5, device=torch.device("cpu"),
                        memory_format=torch.contiguous_format, amp_dtype=None, writer=_NullWriter(),
                        save=lambda step: None, guard=CollapseGuard("swav", 1.0, tol=0.0, min_spread=0.0, patience=0),
                        after_step=lambda step: None)
    assert len(calls) == 2


class _NullWriter:
    def write(self, record):
        pass


@pytest.mark.parametrize("policy", ["stop", "warn"])
def test_a_run_driven_into_collapse_stops_with_the_remedies(faces, tmp_path, policy):
    """Sinkhorn at epsilon 1 gives near-uniform codes: the swapped prediction pulls every prediction to
    uniform, the loss onto ln K, within a few steps."""
    out = str(tmp_path / "collapse")
    args = SMALL + [f"data.root={faces['root'] / 'readable32.txt'}", "swav.epsilon=1.0", "swav.n_prototypes=8",
                    "optim.epochs=4", "collapse.tol=0.05", "collapse.patience_iters=4",
                    f"collapse.on_collapse={policy}"]
    res = subprocess.run(_cmd(args, out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["collapsed"] is True
    records = _records(out)
    said = [r for r in records if "collapse" in r]
    assert len(said) == 1 and "swav.epsilon" in said[0]["collapse"]
    if policy == "stop":
        assert res.returncode == 3, res.stderr[-3000:]
        assert "swav collapsed" in res.stderr + res.stdout
        assert max(_step_losses(records)) == said[0]["step"] < 15  # nothing trained after it
    else:
        assert res.returncode == 0, res.stderr[-3000:]
        assert max(_step_losses(records)) == 15  # 4 epochs x 4 steps
