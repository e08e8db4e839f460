"""Frozen-backbone features extracted once and cached on disk (the linear protocol of paper §3.3 read at
feature-cache speed; issue 20).

Features of one (backbone, dataset split, pre-processing) are stored as ``.npy`` files under
``ROOT/<key>/`` where ``key`` is the sha256 of that tuple as JSON (``cache_key``): the backbone is named
by its checkpoint file's sha256 (or the init name ``scratch`` / ``imagenet``), its arch and its model
factory; the split by dataset name, root, split and the sha256 of its sorted sample keys; the
pre-processing by its parameters (crop size, box scale, grid, flip). ``ROOT/<key>/index.json`` holds
each file's sha256, shape and dtype; it is written last, so an interrupted write leaves no index and
is redone. On load every file's sha256 is checked: a file that is missing, unreadable or whose bytes
changed is logged ("cache: ... corrupted ... rebuilding") and the entry is extracted again. Every
file is written atomically (temporary file in the same folder, then os.replace).

The arrays themselves (which feature taps) are the caller's: scripts/evaluate_features.py extracts them.
"""
import hashlib
import json
import os

import numpy as np

from common.files import atomic_open, write_json
from common.logger import log
from common.weights import sha256_file

INDEX = "index.json"


def keys_sha256(keys) -> str:
    """sha256 of the sorted sample keys (one per line): names the exact sample set of a split."""
    return hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest()


def cache_key(parts: dict) -> str:
    """sha256 of ``parts`` as canonical JSON (sorted keys): the cache folder name."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _save_npy_atomic(path, array) -> str:
    """np.save through ``common.files.atomic_open``; returns the written file's sha256."""
    with atomic_open(path, "wb") as (f, tmp):
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        digest = sha256_file(tmp)
    return digest


class FeatureCache:
    """``get(parts, compute)``: the arrays cached under ``cache_key(parts)``, or ``compute()``'s, stored.
    ``stats`` counts hits, misses (extractions) and rebuilt (corrupted entries extracted again)."""

    def __init__(self, root):
        self.root = str(root)
        self.stats = {"hits": 0, "misses": 0, "rebuilt": 0}

    def folder(self, parts) -> str:
        return os.path.join(self.root, cache_key(parts))

    def load(self, folder):
        """{name: array} of a cached entry, None when absent; raises ValueError naming a corrupted file."""
        index_path = os.path.join(folder, INDEX)
        if not os.path.isfile(index_path):
            return None
        try:
            with open(index_path) as f:
                files = json.load(f)["files"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{index_path}: unreadable index ({e})") from None
        arrays = {}
        for name, entry in files.items():
            path = os.path.join(folder, f"{name}.npy")
            if not os.path.isfile(path):
                raise ValueError(f"{path}: missing")
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ValueError(f"{path}: sha256 {digest[:12]}... does not match the index's "
                                 f"{entry['sha256'][:12]}...")
            try:
                arrays[name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: unreadable ({e})") from None
            if list(arrays[name].shape) != entry["shape"]:
                raise ValueError(f"{path}: shape {arrays[name].shape} differs from the index's {entry['shape']}")
        return arrays

    def store(self, folder, arrays, parts) -> None:
        """Write ``arrays`` as .npy files, then the index (sha256, shape, dtype of each, and ``parts``)."""
        os.makedirs(folder, exist_ok=True)
        index_path = os.path.join(folder, INDEX)
        if os.path.exists(index_path):
            os.remove(index_path)          # no index while the files are being replaced
        files = {}
        for name, array in arrays.items():
            digest = _save_npy_atomic(os.path.join(folder, f"{name}.npy"), array)
            files[name] = {"sha256": digest, "shape": list(array.shape), "dtype": str(array.dtype)}
        write_json(index_path, {"parts": parts, "files": files})

    def get(self, parts, compute) -> dict:
        """Cached arrays of ``parts`` (sha256-verified), else ``compute()`` stored under its key."""
        folder = self.folder(parts)
        rebuilt = False
        try:
            arrays = self.load(folder)
        except ValueError as e:
            log(f"cache: corrupted entry {folder}: {e}; rebuilding")
            arrays, rebuilt = None, True
        if arrays is not None:
            self.stats["hits"] += 1
            return arrays
        self.stats["misses"] += 1
        self.stats["rebuilt"] += int(rebuilt)
        arrays = compute()
        self.store(folder, arrays, parts)
        return arrays
