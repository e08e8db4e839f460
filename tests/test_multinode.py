"""Multi-node launch and preemption of pretrain.train (docs/multinode.md), on CPU with gloo.

- Two torchrun "nodes" on this machine (--nnodes 2, one process each, c10d rendezvous on
  127.0.0.1) log the losses of a one-process run with the same global batch. As in
  tests/test_pretrain_train.py the model uses GroupNorm (model.norm=group): per-process BatchNorm
  statistics would differ by construction; Sinkhorn, the queue, the sampler and the gradient
  averaging are what is compared.
- SIGTERM to the whole process group of a run (as torchrun and SLURM deliver it, DataLoader
  worker included) checkpoints at the next iteration boundary and exits with code 75; rerunning
  the same command resumes from last.pth and logs the same losses as the uninterrupted run.
- A stop signal that reached only one rank stops every rank at the same step.
- pretrain.plan gives SwAV's published recipes (batch 4096 and 256) and their epoch times.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import load_config
from common.logger import read_jsonl
from pretrain.preempt import EXIT_PREEMPTED, StopRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "pretrain", "configs", "synthetic.yaml")
# GroupNorm, 2 epochs x 4 iterations of batch 8, queue (2 batches) from epoch 0, prototypes frozen 3 steps
SMALL = ["model.norm=group", "data.batch_size=8", "aug.crop_sizes=[32,16]", "swav.queue_length=16",
         "swav.queue_start_epoch=0", "swav.freeze_prototypes_iters=3", "optim.epochs=2", "export_at_end=false"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "FACEREP_PROGRESS": "0", "PYTHONPATH": ROOT}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(out, "log.jsonl")) if "iter" in r}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """32 smooth random 40x40 images in a list file (4 batches of 8)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    paths = []
    for i in range(32):
        f = rng.uniform(1, 9, size=3)
        a = np.stack([np.sin(xx * f[0] + f[2]), np.cos(yy * f[1]), np.sin((xx + yy) * f[2])], -1)
        paths.append(str(root / f"{i:02d}.png"))
        Image.fromarray(((a + 1) * 127.5).astype(np.uint8)).save(paths[-1])
    (root / "list.txt").write_text("\n".join(paths) + "\n")
    return str(root / "list.txt")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """Losses of one uninterrupted single-process run (in this process: same code, same maths)."""
    from pretrain.train import main
    out = str(tmp_path_factory.mktemp("reference"))
    main(load_config(CONFIG, SMALL + [f"data.root={images}", f"out={out}", "checkpoint_every_iters=0"]))
    losses = _losses(out)
    assert sorted(losses) == list(range(8))
    return losses


def test_two_nodes_match_one_node(images, reference, tmp_path):
    out, port = str(tmp_path / "two_nodes"), _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
         "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", "test", "-m", "pretrain.train", "--config", CONFIG, f"data.root={images}", f"out={out}",
         "checkpoint_every_iters=2"] + SMALL,
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "global batch 8 (2 x 4)" in logs[0] + logs[1]
    losses = _losses(out)
    assert sorted(losses) == list(range(8))
    # equal up to float summation order (gradient all-reduce), which LARS at lr 4.8 amplifies over the
    # steps to ~1e-5 relative (a per-process Sinkhorn: tests/test_batch_equivalence.py, > 1e-3 at once)
    np.testing.assert_allclose([losses[s] for s in range(8)], [reference[s] for s in range(8)], rtol=1e-4, atol=0)
    assert abs(losses[0] - reference[0]) < 1e-6  # before any update: the same batch, the same loss
    state = load_checkpoint(os.path.join(out, "last.pth"))
    assert state["iteration"] == 8 and state["queue"]["world_size"] == 2


def test_sigterm_checkpoints_then_rerun_continues_with_the_same_losses(images, reference, tmp_path):
    out = str(tmp_path / "preempted")
    cmd = [sys.executable, "-m", "pretrain.train", "--config", CONFIG, f"data.root={images}", f"out={out}",
           "checkpoint_every_iters=0", "data.num_workers=1"] + SMALL
    # a session of its own: the signal goes to the process group, DataLoader worker included
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    log_path, deadline = os.path.join(out, "log.jsonl"), time.time() + 300
    try:
        while not (os.path.exists(log_path) and 1 in _losses(out)):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run did not reach step 1"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=300) == EXIT_PREEMPTED, proc.stderr.read().decode()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    records = read_jsonl(log_path)
    stopped = [r["step"] for r in records if r.get("event") == "preempted"]
    assert len(stopped) == 1 and 2 <= stopped[0] < 8
    assert load_checkpoint(os.path.join(out, "last.pth"))["iteration"] == stopped[0]  # no periodic checkpoints
    first = _losses(out)
    assert sorted(first) == list(range(stopped[0]))

    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    records = read_jsonl(log_path)
    resume = [i for i, r in enumerate(records) if r.get("event") == "resume"]
    assert len(resume) == 1 and records[resume[0]]["step"] == stopped[0]
    after = {r["step"]: r["loss"] for r in records[resume[0]:] if "iter" in r}
    assert sorted(after) == list(range(stopped[0], 8))
    losses = {**first, **after}
    np.testing.assert_allclose([losses[s] for s in range(8)], [reference[s] for s in range(8)], rtol=1e-6, atol=0)


def _agree(rank, world, init_file, out_dir):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    stop = StopRequest()
    try:
        before = stop.requested("cpu")
        if rank == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # only rank 1 is told
            while stop.signum is None:
                time.sleep(0.001)
        answers = [before, stop.requested("cpu"), stop.signum]
        torch.save(answers, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        stop.close()
        tdist.destroy_process_group()


def test_a_signal_on_one_rank_stops_every_rank(tmp_path):
    mp.start_processes(_agree, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="fork")
    answers = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2)]
    assert answers == [[False, True, None], [False, True, int(signal.SIGUSR1)]]
    before = signal.getsignal(signal.SIGTERM)
    StopRequest().close()
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are put back


def test_plan_gives_the_published_swav_recipes_and_reads_measured_throughput(tmp_path, capsys):
    from pretrain.plan import main as plan_main
    from pretrain.plan import plan
    imagenet = 1_281_167
    big = plan(images=imagenet, epochs=200, gpus=64)  # SwAV 4096 recipe (= paper App. A.1 settings)
    assert (big["batch"], big["lr"], big["final_lr"], big["warmup_epochs"], big["warmup_start_lr"]) == (4096, 4.8, 0.045, 10, 0.3)
    assert (big["queue_length"], big["freeze_prototypes_iters"], big["iters_per_epoch"]) == (0, 313, 312)
    assert abs(big["epoch_minutes"] * 60 - 220) < 2.2  # SwAV README: 3 min 40 s per epoch on 64 GPUs
    small = plan(images=imagenet, epochs=200, gpus=4)  # SwAV bs256 recipe
    assert (small["batch"], small["lr"], small["final_lr"], small["warmup_epochs"]) == (256, 0.6, 0.0006, 0)
    assert (small["queue_length"], small["queue_start_epoch"], small["sinkhorn_columns"]) == (3840, 15, 4096)
    assert small["freeze_prototypes_iters"] == 5005 and abs(small["epoch_minutes"] - 52.17) < 0.5  # 52 min 10 s
    node = plan(images=3_311_286, epochs=100, gpus=8)
    assert (node["lr"], node["queue_length"], node["queue_start_epoch"]) == (1.2, 3584, 8)  # 7 batches of 512
    measured = tmp_path / "bench.json"
    measured.write_text('{"img_per_s_per_gpu": 400, "batch_per_gpu": 128, "device": "H100"}')
    plan_main(["--images", "3311286", "--gpus", "8", "--throughput-json", str(measured), "--json"])
    p = json.loads(capsys.readouterr().out)
    assert (p["batch"], p["lr"], p["queue_length"], p["iterations"]) == (1024, 2.4, 3072, 3233 * 200)
    assert abs(p["hours"] - 3233 * 200 * 1024 / (400 * 8) / 3600) < 1e-9
    measured.write_text('{"images_per_second": 400}')
    with pytest.raises(SystemExit, match="img_per_s_per_gpu"):
        plan_main(["--images", "3311286", "--gpus", "8", "--throughput-json", str(measured)])
