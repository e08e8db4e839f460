"""Distributed helpers for torchrun (DESIGN.md "Runs"; house style §8.11): one code path from CPU to multi-GPU.

`init()` is called inside each entry point's `main()`, never at import time. Under torchrun it
creates the default process group from the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL when CUDA is available, gloo otherwise. Without
that environment it forms a world of 1 with no process group, and every helper below still
works (collectives become identities), so SwAV/MoCo gathers run unchanged in CPU tests.

Failure handling: the process group is created with `timeout=timedelta(seconds=timeout_s)`, so
a collective whose peer died raises instead of hanging forever. gloo enforces this timeout on
every collective (and raises at once when it sees the peer's socket close). NCCL enforces it
only with asynchronous error handling, which `init()` switches on with
`os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")` before creating the group (the
setdefault keeps a value the user exported): the NCCL watchdog then aborts the communicator
and tears the process down once a collective exceeds the timeout, so torchrun sees the failure
and ends the job. Choose `timeout_s` larger than the longest rank-0-only stretch (evaluation,
checkpoint writing) between two collectives.
"""
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

_TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on its node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init(timeout_s: float = 1800, backend: str | None = None) -> DistInfo:
    """Set up this process from torchrun's environment, or as a world of 1 without it.

    backend: None picks "nccl" when CUDA is available and "gloo" otherwise; pass "gloo" to force
    CPU collectives (tests on a GPU machine). The device is cuda:LOCAL_RANK with NCCL and the
    CPU with gloo; in a world of 1 it is cuda:0 when CUDA is available, else the CPU.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    present = [k for k in _TORCHRUN_KEYS if k in os.environ]
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    if len(present) != len(_TORCHRUN_KEYS):
        missing = sorted(set(_TORCHRUN_KEYS) - set(present))
        raise RuntimeError(f"incomplete torchrun environment: {present} set but {missing} missing")
    if dist.is_initialized():
        raise RuntimeError("common.distributed.init() called twice: the process group already exists")

    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} outside [0, WORLD_SIZE={world_size})")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")

    kwargs = {}
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        # Without async error handling a NCCL collective whose peer died blocks forever.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        kwargs["device_id"] = device  # binds the group to this GPU (barrier needs no device_ids)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


# Collectives below take tensors on DistInfo.device: CUDA tensors under NCCL, CPU under gloo.


def is_initialized() -> bool:
    """True when a default process group exists (i.e. init() ran under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on global rank 0 (the process that logs and writes files)."""
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place and return it (identity in a world of 1)."""
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (same shape on every rank) over ranks along dim 0, rank order, no grad."""
    t = t.detach()
    world_size = get_world_size()
    if world_size == 1:
        return t.clone()
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_gather_varlen(t: torch.Tensor) -> torch.Tensor:
    """Like all_gather_cat, but ranks may hold different numbers of rows (dim 0, possibly 0).

    Shapes are gathered first; every rank pads its rows to the largest count, the padded
    tensors are gathered, and each rank's padding is cut off before concatenating in rank
    order. Trailing dimensions must agree on all ranks (checked; every rank raises together).
    """
    t = t.detach()
    world_size = get_world_size()
    if world_size == 1:
        return t.clone()
    if t.dim() == 0:
        raise ValueError("all_gather_varlen needs a tensor with at least one dimension")
    shape = torch.tensor(t.shape, dtype=torch.long, device=t.device)
    shapes = all_gather_cat(shape[None]).tolist()  # world_size x ndim
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError(f"all_gather_varlen: trailing dimensions differ across ranks: {shapes}")
    sizes = [s[0] for s in shapes]
    max_rows = max(sizes)
    padded = t.new_zeros((max_rows, *t.shape[1:]))
    padded[: t.shape[0]] = t
    gathered = all_gather_cat(padded)  # (world_size * max_rows) x ...
    parts = [gathered[r * max_rows: r * max_rows + n] for r, n in enumerate(sizes)]
    return torch.cat(parts, dim=0)


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Replace BatchNorm layers by SyncBatchNorm, only for NCCL (CUDA) with more than one rank.

    On CPU/gloo or in a world of 1 the model is returned unchanged (SyncBatchNorm is CUDA-only
    and pointless for a single process). SwAV syncs BN over all GPUs (anchors_frl_swav.md §2.10).
    """
    if get_world_size() > 1 and dist.get_backend() == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` (already on info.device) when world > 1, else `model`."""
    if info.world_size == 1:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def cleanup() -> None:
    """Destroy the default process group if there is one (call at the end of main())."""
    if is_initialized():
        dist.destroy_process_group()
