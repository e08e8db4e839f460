"""Pre-training images read from tar shards by offset (paper App. A.1 scale: 1.8M-5M face crops
on 64 GPUs), with a shard-local, deterministic, resumable epoch order.

Millions of small JPEG files on a shared file system cost one metadata lookup each; packed into
~1 GB tar shards (``python -m pretrain.curate.shard``) they cost one ``open`` per shard and
worker, then plain reads. The shard folder holds ``shard-NNNNNN.tar`` files and an index:
``index.json`` (format, shard names, byte sizes, sample counts, sha256) and ``index.npz``
(per sample: shard number, byte offset and size of its data inside the tar, its key, and an
optional label). Samples are read with ``os.pread`` at their offset, so the tar is never parsed
at training time.

Order (design choice): this is a map-style dataset driven by ``ShardEpochSampler``, not an
iterable stream. Each epoch, drawn from (seed, epoch): (1) the shards are permuted; (2) the
samples are laid out shard after shard; (3) the sequence is cut into windows of
``shuffle_window`` samples and each window is shuffled (a shuffle buffer with exact
bookkeeping). The result is a permutation of all samples, so coverage is exactly once per epoch.
It is cut into global batches as ``pretrain.data.EpochSampler`` does (rank r takes the r-th slice
of each global batch), so the batches do not depend on the number of processes or DataLoader
workers, and resuming inside an epoch skips exactly the batches the checkpoint counts as
consumed. At any time the readers touch only the shards of one or two windows, i.e. about
``shuffle_window / samples_per_shard + 1`` shards. The packer shuffles the list before packing,
so every shard is a random sample of the set and a window mixes identities like a global shuffle.
``shuffle_window = 0`` gives the folder sampler's global permutation instead.
"""
import io
import json
import os

import numpy as np
import torch

from pretrain.data import EpochSampler, ImageDataset, UnreadableLog, list_images, load_rgb

FORMAT = "facerep-shards"
VERSION = 1
INDEX_JSON = "index.json"
INDEX_NPZ = "index.npz"
MAX_OPEN_SHARDS = 64  # file descriptors kept open per process (least recently opened closed first)

def is_shard_source(src) -> bool:
    """True for a shard folder (holding index.json) or a path to such an index.json."""
    src = str(src)
    if os.path.isdir(src):
        return os.path.isfile(os.path.join(src, INDEX_JSON))
    return os.path.basename(src) == INDEX_JSON


class ShardIndex:
    """The concatenated index of one or several shard folders: per sample its shard number, byte
    offset and size in memory (16 bytes a sample); ``key(i)`` and ``label(i)`` read the stored
    strings from index.npz on demand (they are not needed for training)."""

    def __init__(self, sources):
        sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        self.shard_paths, self.shard_bytes, self._npz = [], [], []
        shard, offset, size = [], [], []
        for src in sources:
            folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
            meta, arrays = _read_index(folder)
            shard.append(arrays["shard"].astype(np.int32) + len(self.shard_paths))
            offset.append(arrays["offset"].astype(np.int64))
            size.append(arrays["size"].astype(np.int32))
            for entry in meta["shards"]:
                self.shard_paths.append(os.path.join(folder, entry["name"]))
                self.shard_bytes.append(int(entry["bytes"]))
            self._npz.append(os.path.join(folder, INDEX_NPZ))
        self.shard, self.offset, self.size = np.concatenate(shard), np.concatenate(offset), np.concatenate(size)
        self._starts = np.cumsum([0] + [len(a) for a in shard])
        self._strings = {}

    def __len__(self) -> int:
        return len(self.shard)

    def _locate(self, i: int) -> tuple:
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._npz[part], i - int(self._starts[part])

    def _string(self, name: str, i: int):
        npz_path, j = self._locate(i)
        if (npz_path, name) not in self._strings:  # loaded on first use only
            with np.load(npz_path, allow_pickle=False) as npz:
                found = f"{name}_end" in npz.files
                self._strings[npz_path, name] = (npz[f"{name}_bytes"], npz[f"{name}_end"]) if found else None
        if self._strings[npz_path, name] is None:
            return None
        data, ends = self._strings[npz_path, name]
        return bytes(data[int(ends[j - 1]) if j > 0 else 0:int(ends[j])]).decode("utf-8")

    def key(self, i: int) -> str:
        """The sample's key (its source path relative to the packed list's common folder)."""
        return self._string("key", i)

    def label(self, i: int):
        """The sample's label string, or None when its shards were packed without labels."""
        return self._string("label", i)

    def check_files(self) -> None:
        """Raise naming the first shard file that is missing or has another size than indexed."""
        for path, expected in zip(self.shard_paths, self.shard_bytes):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard file not found: {path} (listed in its folder's {INDEX_JSON})")
            actual = os.path.getsize(path)
            if actual != expected:
                raise ValueError(f"{path}: {actual} bytes, the index says {expected} (truncated or replaced shard)")


def _read_index(folder: str) -> tuple:
    """(index.json dict, index.npz's shard / offset / size arrays) of one shard folder, checked."""
    json_path, npz_path = os.path.join(folder, INDEX_JSON), os.path.join(folder, INDEX_NPZ)
    for path in (json_path, npz_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard index not found: {path} (write shards with pretrain.curate.shard)")
    try:
        with open(json_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{json_path}: not a {FORMAT} v{VERSION} index")
    n = int(meta["n_samples"])
    with np.load(npz_path, allow_pickle=False) as npz:
        missing = [k for k in ("shard", "offset", "size", "key_bytes", "key_end") if k not in npz.files]
        arrays = {} if missing else {k: npz[k] for k in ("shard", "offset", "size")}
    if missing or any(len(a) != n for a in arrays.values()):
        raise ValueError(f"{npz_path}: arrays {missing or ''} missing or not of length n_samples={n} "
                         f"({json_path})")
    counts = np.bincount(arrays["shard"], minlength=len(meta["shards"])) if n else np.zeros(0, int)
    if n and (arrays["shard"].max() >= len(meta["shards"])
              or counts.tolist() != [int(s["samples"]) for s in meta["shards"]]):
        raise ValueError(f"{npz_path}: per-shard sample counts disagree with {json_path}")
    return meta, arrays


class ShardDataset(torch.utils.data.Dataset):
    """Samples of a ShardIndex, indexed by the (index, seed) pairs of an EpochSampler, like
    ``pretrain.data.ImageDataset``: the augmentation is a function of the seed only, a transform
    with a ``load(file)`` method decodes its own input (pretrain/fast_multicrop.py), and a sample
    that cannot be read or decoded gives None (dropped and counted by ``collate_skip_bad``).
    Shard files are opened lazily, once per process (DataLoader worker), and read with pread."""

    def __init__(self, index: ShardIndex, transform):
        self.index, self.transform = index, transform
        self._fds, self._pid = {}, None
        self.report_unreadable = UnreadableLog()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):  # DataLoader workers (spawn) open their own files
        return {**self.__dict__, "_fds": {}, "_pid": None}

    def __del__(self):
        self.close()

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are not ours to cache
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            if len(self._fds) >= MAX_OPEN_SHARDS:
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[shard] = os.open(self.index.shard_paths[shard], os.O_RDONLY)
        return self._fds[shard]

    def read_bytes(self, i: int) -> bytes:
        """The stored file bytes of sample ``i``."""
        shard, offset, size = int(self.index.shard[i]), int(self.index.offset[i]), int(self.index.size[i])
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"{self.index.shard_paths[shard]}: short read at offset {offset} "
                          f"({len(data)} of {size} bytes)")
        return data

    def __getitem__(self, key):
        i, seed = key
        try:
            img = getattr(self.transform, "load", load_rgb)(io.BytesIO(self.read_bytes(i)))
        except OSError:
            img = None
        if img is None:
            self.report_unreadable(self.index.key(i))
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img)


class ShardEpochSampler(EpochSampler):
    """EpochSampler whose epoch order is shard-local: shards permuted, then shuffled within
    windows of ``shuffle_window`` samples (see the module docstring). Batching, the per-sample
    augmentation seeds and resuming are EpochSampler's."""

    def __init__(self, shard_of_sample: np.ndarray, *, shuffle_window: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0):
        super().__init__(len(shard_of_sample), batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
        if shuffle_window < 0:
            raise ValueError(f"shuffle_window must be >= 0 (0: global shuffle), got {shuffle_window}")
        self.shard_of_sample, self.window = np.asarray(shard_of_sample), shuffle_window

    def permutation(self, rng) -> np.ndarray:
        if self.window == 0:
            return rng.permutation(self.n)
        n_shards = int(self.shard_of_sample.max()) + 1
        shard_rank = rng.permutation(n_shards)[self.shard_of_sample]  # position of each sample's shard
        laid_out = np.lexsort((np.arange(self.n), shard_rank))  # shard after shard, file order inside
        window_id = np.arange(self.n) // self.window
        return laid_out[np.lexsort((rng.random(self.n), window_id))]  # shuffled inside each window


def open_pretrain_data(root, transform, *, batch_size: int, rank: int, world_size: int, seed: int,
                       shuffle_window: int) -> tuple:
    """(dataset, sampler) for ``data.root``: image folders / list files (ImageDataset + EpochSampler)
    or shard folders / their index.json (ShardDataset + ShardEpochSampler). A list mixes sources of
    one kind only."""
    sources = [root] if isinstance(root, (str, os.PathLike)) else list(root or [])
    shards = [is_shard_source(s) for s in sources]
    kwargs = {"batch_size": batch_size, "rank": rank, "world_size": world_size, "seed": seed}
    if sources and all(shards):
        index = ShardIndex(sources)
        index.check_files()
        return (ShardDataset(index, transform),
                ShardEpochSampler(index.shard, shuffle_window=shuffle_window, **kwargs))
    if any(shards):
        raise ValueError(f"data.root mixes shard folders and image folders / list files: {sources}; "
                         f"pack them all (pretrain.curate.shard) or list them all")
    paths = list_images(sources)
    return ImageDataset(paths, transform), EpochSampler(len(paths), **kwargs)
