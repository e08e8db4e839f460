"""Preemption for long pre-training jobs (paper App. A.1: 200 epochs on 64 GPUs): SIGTERM or
SIGUSR1 asks the run to checkpoint at the next iteration boundary and exit with code 75, and a
rerun of the same command resumes from last.pth (docs/multinode.md, scripts/slurm/pretrain.sbatch).

The signal handler only sets a flag. At every iteration boundary ``StopRequest.requested()``
all-reduces the flags, so all ranks see the same answer at the same step even when the signal
reached them at different times, or only one of them; they then write one checkpoint together,
wait for it at a barrier, and exit. DataLoader workers ignore both signals
(``ignore_stop_signals`` as ``worker_init_fn``): torchrun signals each worker's whole process
group and SLURM signals every process of a job step, and a worker killed by the signal would
crash the loop before it can checkpoint.
"""
import signal

import torch

from common import distributed as dist
from common.logger import log

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Installs flag-setting handlers for ``signals`` (main thread only) until ``close()``."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signum = None
        self._previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def requested(self, device) -> bool:
        """Whether any rank received a stop signal. A collective: call it on every rank at the
        same point of the loop."""
        flag = torch.tensor([0.0 if self.signum is None else 1.0], device=device)
        return dist.all_reduce_sum(flag).item() > 0

    def exit(self, step: int, path: str, writer) -> None:
        """After the checkpoint of ``step`` was saved to ``path`` (on every rank's call): log it,
        wait for all ranks, and leave with EXIT_PREEMPTED."""
        name = signal.Signals(self.signum).name if self.signum is not None else "another rank's signal"
        log(f"stop requested ({name}): checkpoint of step {step} in {path}; exiting with code "
            f"{EXIT_PREEMPTED}, rerun the same command to resume")
        writer.write({"event": "preempted", "step": step})
        dist.barrier()  # nobody exits (which makes torchrun stop the others) before rank 0 has written
        dist.cleanup()
        self.close()
        raise SystemExit(EXIT_PREEMPTED)

    def close(self) -> None:
        """Put the previous handlers back."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the stop signals are the main process's business."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
