"""Run output (DESIGN.md "Runs, configs, outputs"): rank-0 console lines, tqdm bars, log.jsonl."""
import json
import math
import os
import sys
import time

from tqdm import tqdm


def _rank():
    """This process's rank, read from torch.distributed when initialised, else from torchrun's env."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def log(*parts):
    """Print one timestamped line on rank 0; other ranks stay silent."""
    if _rank() == 0:
        print(time.strftime("%H:%M:%S"), *parts, flush=True)


def _plain(value):
    """Convert tensors / numpy scalars to JSON-ready floats; NaN and inf become strings."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scalars(record, step_key):
    """The (tag, value, step) triples of a log record for TensorBoard: numeric fields of a record with a
    ``step_key`` go under ``step/`` at that step, those of an epoch record under ``epoch/`` at its epoch;
    nested dicts (e.g. probes) become ``prefix/name/key``."""
    kind, step = ("step", record[step_key]) if step_key in record else ("epoch", record.get("epoch"))
    if not isinstance(step, int) or isinstance(step, bool):
        return []

    def flat(prefix, value):
        if isinstance(value, dict):
            return [t for k, v in value.items() for t in flat(f"{prefix}/{k}", v)]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [(prefix, float(value), step)]
        return []
    return [t for k, v in sorted(record.items()) if k not in (step_key, "epoch") for t in flat(f"{kind}/{k}", v)]


class JsonlWriter:
    """Appends one JSON object per line to ``path`` on rank 0 (``log.jsonl`` of a run).

    With ``tensorboard=True`` the same records also go to TensorBoard event files in ``<folder of
    path>/tensorboard`` (``tensorboard --logdir runs``), step records (those with ``step_key``) at their
    step; the tensorboard package is imported only then.
    """

    def __init__(self, path, tensorboard=False, step_key="iteration"):
        self.path, self.board, self.step_key = path, None, step_key
        self.enabled = _rank() == 0
        if self.enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise ImportError("tensorboard=true needs the tensorboard package: pip install tensorboard "
                                      f"({e})") from e
                self.board = SummaryWriter(os.path.join(os.path.dirname(os.path.abspath(path)), "tensorboard"))

    def write(self, record):
        if not self.enabled:
            return
        record = _plain(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.board is not None:
            for tag, value, step in _scalars(record, self.step_key):
                self.board.add_scalar(tag, value, step)
            self.board.flush()


def read_jsonl(path):
    """All records of a ``log.jsonl`` file, skipping a torn last line from a killed run."""
    records = []
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
    return records


def progress(iterable, desc=None, total=None, **kwargs):
    """A tqdm bar on rank 0, the bare iterable elsewhere or when ``FACEREP_PROGRESS=0``.

    Off a terminal (a cluster log file) the bar refreshes at most once a minute.
    """
    if _rank() != 0 or os.environ.get("FACEREP_PROGRESS") == "0":
        return iterable
    interval = 0.1 if sys.stderr.isatty() else 60.0
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, mininterval=interval, **kwargs)
