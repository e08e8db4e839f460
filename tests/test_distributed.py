"""Tests for common.distributed: world of 1 in-process, and 2-process gloo runs launched like torchrun.

Run as a script (`python tests/test_distributed.py MODE OUT_DIR`) this file is the worker that the
tests start, one process per rank, with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in its environment.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from common import distributed

REPO = Path(__file__).resolve().parents[1]
ROWS = {0: 3, 1: 5}  # varlen gather: rank 0 holds 3 rows, rank 1 holds 5
DEAD_TIMEOUT_S = 5


def _full_data() -> torch.Tensor:
    return torch.arange(8 * 3, dtype=torch.float64).reshape(8, 3) ** 1.5


def _rank_rows(rank: int) -> slice:
    start = sum(ROWS[r] for r in range(rank))
    return slice(start, start + ROWS[rank])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()


def _grads_of_mean_loss(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.eval()  # BN running stats: no per-rank batch statistics in the comparison
    model.zero_grad()
    model(x).pow(2).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


# --------------------------------------------------------------------------- worker side
def _worker_gather(out: Path) -> None:
    info = distributed.init(timeout_s=30, backend="gloo")
    rank = info.rank
    data = _full_data()
    res = {"info": (info.rank, info.world_size, info.local_rank, str(info.device)),
           "helpers": (distributed.get_rank(), distributed.get_world_size(), distributed.is_main(),
                       distributed.is_initialized())}
    res["varlen"] = distributed.all_gather_varlen(data[_rank_rows(rank)])
    res["varlen_long"] = distributed.all_gather_varlen(torch.arange(ROWS[rank]) + 10 * rank)
    res["varlen_empty"] = distributed.all_gather_varlen(data if rank == 1 else data[:0])
    res["cat"] = distributed.all_gather_cat(data[4 * rank: 4 * rank + 4])
    local_sum = data[_rank_rows(rank)].sum(0)
    res["reduced"] = distributed.all_reduce_sum(local_sum)
    res["reduce_in_place"] = res["reduced"] is local_sum
    try:
        distributed.all_gather_varlen(torch.zeros(2, 3 + rank))
        res["mismatch_raised"] = False
    except ValueError:
        res["mismatch_raised"] = True
    model = distributed.convert_sync_bn(_model())
    res["bn_kept"] = type(model[1]) is nn.BatchNorm1d  # gloo/CPU: no SyncBatchNorm
    ddp = distributed.wrap_ddp(model, info)
    res["ddp_grads"] = _grads_of_mean_loss(ddp, data[4 * rank: 4 * rank + 4])
    distributed.barrier()
    torch.save(res, out / f"gather{rank}.pt")
    distributed.cleanup()


def _worker_broken_peer(out: Path, hang: bool) -> None:
    """Rank 1 dies (or hangs without joining) once the group is up; rank 0 runs a collective."""
    info = distributed.init(timeout_s=DEAD_TIMEOUT_S, backend="gloo")
    distributed.barrier()  # the group is fully up before rank 1 leaves
    if info.rank == 1:
        if hang:
            time.sleep(20 * DEAD_TIMEOUT_S)  # alive, sockets open, never joins (killed by the test)
        os._exit(0)
    start = time.monotonic()
    try:
        distributed.all_reduce_sum(torch.ones(3))
        error = None
    except Exception as exc:  # gloo: RuntimeError / DistBackendError
        error = f"{type(exc).__name__}: {exc}"
    torch.save({"error": error, "elapsed": time.monotonic() - start}, out / "rank0.pt")
    os._exit(0)  # no destroy_process_group: the peer is gone


# --------------------------------------------------------------------------- test side
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, out: Path, world_size: int = 2, timeout_s: float = 90,
            wait_ranks: tuple[int, ...] = (0, 1)) -> list[tuple[int, str]]:
    """Start one worker process per rank with a torchrun-like environment.

    Waits for the processes of `wait_ranks` and returns their (returncode, stderr); the other
    ranks' processes are killed afterwards.
    """
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE")}
        env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONPATH=str(REPO),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, __file__, mode, str(out)], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for rank in wait_ranks:
            _, err = procs[rank].communicate(timeout=timeout_s)
            results.append((procs[rank].returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


@pytest.fixture(scope="module")
def gather_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_gather")
    for rank, (rc, err) in enumerate(_launch("gather", out)):
        assert rc == 0, f"rank {rank} failed:\n{err[-3000:]}"
    return [torch.load(out / f"gather{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_match_single_process(gather_results):
    data = _full_data()
    ref_grads = _grads_of_mean_loss(_model(), data)  # one process on all 8 rows
    for rank, res in enumerate(gather_results):
        assert res["info"] == (rank, 2, rank, "cpu")
        assert res["helpers"] == (rank, 2, rank == 0, True)
        torch.testing.assert_close(res["varlen"], data, rtol=0, atol=0)  # 3 + 5 rows, rank order
        assert torch.equal(res["varlen_long"], torch.tensor([0, 1, 2, 10, 11, 12, 13, 14]))
        torch.testing.assert_close(res["varlen_empty"], data, rtol=0, atol=0)  # rank 0 had 0 rows
        torch.testing.assert_close(res["cat"], data, rtol=0, atol=0)
        torch.testing.assert_close(res["reduced"], data.sum(0), rtol=1e-12, atol=0)
        assert res["reduce_in_place"]
        assert res["mismatch_raised"]
        assert res["bn_kept"]
        for g, ref in zip(res["ddp_grads"], ref_grads):  # DDP averages the two half-batch grads
            torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)


def test_dead_rank_raises_instead_of_hanging(tmp_path):
    """Rank 1 exits after init: gloo sees the closed socket and rank 0's all_reduce raises."""
    start = time.monotonic()
    results = _launch("dead", tmp_path, timeout_s=60)
    assert [rc for rc, _ in results] == [0, 0], [err[-3000:] for _, err in results]
    res = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert res["error"] is not None, "all_reduce with a dead peer returned normally"
    assert res["elapsed"] < DEAD_TIMEOUT_S + 10, res
    assert time.monotonic() - start < 60


def test_hung_rank_hits_the_timeout(tmp_path):
    """Rank 1 stays alive but never joins: rank 0's all_reduce raises after about timeout_s."""
    results = _launch("hung", tmp_path, timeout_s=60, wait_ranks=(0,))
    assert results[0][0] == 0, results[0][1][-3000:]
    res = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert res["error"] is not None, "all_reduce with a silent peer returned normally"
    assert DEAD_TIMEOUT_S - 1 < res["elapsed"] < DEAD_TIMEOUT_S + 10, res


def test_world_of_one_without_torchrun_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    info = distributed.init()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert (info.rank, info.world_size, info.local_rank, info.device.type) == (0, 1, 0, expected)
    assert not distributed.is_initialized()
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main()) == (0, 1, True)
    distributed.barrier()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    x = torch.arange(6.0).reshape(3, 2).requires_grad_()
    for gathered in (distributed.all_gather_cat(x), distributed.all_gather_varlen(x)):
        assert torch.equal(gathered, x.detach()) and not gathered.requires_grad
        assert gathered.data_ptr() != x.data_ptr()
    model = _model()
    assert distributed.convert_sync_bn(model) is model
    assert distributed.wrap_ddp(model, info) is model
    distributed.cleanup()


def test_incomplete_torchrun_env_raises(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_PORT"):
        distributed.init()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    if mode == "gather":
        _worker_gather(out_dir)
    else:
        _worker_broken_peer(out_dir, hang=(mode == "hung"))
