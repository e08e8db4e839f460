"""Deterministic few-shot subsets (paper §5 "Data & label regime", App. A.3) and checksummed key files.

A subset is a function of (the set of sample keys, fraction, seed) only: keys are sorted first,
so the order a loader lists them in does not matter, and two machines pick the same samples.
Size: round(fraction * N), rounded half up, at least 1. Randomness: numpy
Generator(PCG64(seed)). numpy does not promise identical streams across all future releases,
so the saved key file, not the seed, is the authority for reusing a subset ("once formed, the
same subset is used for all subsequent experiments", App. A.3).

Key file format: UTF-8 text, one key per line, each line ending in "\\n", nothing else. Its
sha256 (of the file's exact bytes) goes into a sidecar `PATH.sha256` in `sha256sum` format
("HEX  NAME\\n"), so the key file stays a plain list and `sha256sum -c PATH.sha256` run in its
folder checks it too. `load_keys` refuses a file whose bytes do not match its sidecar.
"""
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def check_fraction(fraction, key: str = "fraction") -> None:
    """Raise ValueError naming ``key`` unless ``fraction`` is a number in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"{key}={fraction!r}: must be a fraction in (0, 1] of the training set")


def _subset_size(fraction: float, n: int) -> int:
    check_fraction(fraction)
    return max(1, int(math.floor(fraction * n + 0.5)))


def _check_keys(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    for key in keys:
        if not isinstance(key, str) or not key or "\n" in key or "\r" in key:
            raise ValueError(f"sample keys must be non-empty single-line strings, got {key!r}")
    if len(set(keys)) != len(keys):
        dup = sorted(k for k, c in Counter(keys).items() if c > 1)
        raise ValueError(f"duplicate sample keys ({len(dup)}), e.g. {dup[:3]}")
    return keys


def subset_keys(keys: Iterable[str], fraction: float, seed: int) -> list[str]:
    """Sorted random subset of round(fraction * N) keys (at least 1); the same for any key order.

    The keys are sorted, permuted with numpy Generator(seed), and the first n of the permutation
    are taken, so with one seed a smaller fraction's subset is contained in a larger one's.
    """
    keys = sorted(_check_keys(keys))
    if not keys:
        raise ValueError("subset_keys: no keys")
    n = _subset_size(fraction, len(keys))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(keys))[:n])
    return [keys[i] for i in chosen]


def subset_by_identity(keys: Sequence[str], identities: Sequence, fraction: float, seed: int,
                       min_identity_fraction: float = 0.25) -> list[str]:
    """Random subset of round(fraction * N) images keeping at least a share of the identities.

    Paper App. A.3: for face recognition at 2 %, "at least 1/4 of the identities are preserved",
    because CosFace is sensitive to both the number of identities and the images per identity.
    The paper gives no algorithm; ours (seeded, independent of the input order):
      1. identities are permuted; the first k = ceil(max(min_identity_fraction, fraction) * I)
         are chosen (I = number of identities). If those hold fewer than round(fraction * N)
         images, the next identities in the permutation are added until they hold enough;
      2. every chosen identity contributes one random image, so all chosen identities appear;
      3. the rest of the budget is drawn uniformly without replacement from the other images of
         the chosen identities.
    At 2 % on VGGFace2 (~3.1M images, 8631 identities) this keeps 2158 identities with about 29
    images each, where plain image sampling (`subset_keys`) would keep nearly every identity with
    about 7 images each. For fraction >= min_identity_fraction it keeps about a `fraction` share
    of the identities with nearly all their images. The paper states the rule only for the 2 %
    regime; its other regimes sample images without looking at labels (`subset_keys`).
    identities: one label per key, all of one comparable type (str or int).
    Raises if the budget is smaller than the number of identities to keep.
    """
    keys = _check_keys(keys)
    if len(identities) != len(keys):
        raise ValueError(f"{len(keys)} keys but {len(identities)} identities")
    if not keys:
        raise ValueError("subset_by_identity: no keys")
    if not 0 <= min_identity_fraction <= 1:
        raise ValueError(f"min_identity_fraction must be in [0, 1], got {min_identity_fraction}")
    n_total = _subset_size(fraction, len(keys))
    key_arr = np.asarray(keys, dtype=object)  # object arrays: no N x max_len unicode copy
    order = np.argsort(key_arr, kind="stable")  # canonical (sorted-key) order
    key_arr = key_arr[order]
    _, ident = np.unique(np.asarray(identities, dtype=object)[order], return_inverse=True)
    n_ids = int(ident.max()) + 1

    rng = np.random.default_rng(seed)
    id_perm = rng.permutation(n_ids)
    capacity = np.cumsum(np.bincount(ident, minlength=n_ids)[id_perm])  # images in first j+1 ids
    k = min(n_ids, max(1, math.ceil(max(min_identity_fraction, fraction) * n_ids)))
    k = max(k, int(np.searchsorted(capacity, n_total)) + 1)  # enough images to fill the budget
    if k > n_total:
        raise ValueError(f"subset_by_identity: {n_total} images ({fraction} of {len(keys)}) cannot "
                         f"cover {k} of {n_ids} identities with one image each")
    chosen_id = np.zeros(n_ids, dtype=bool)
    chosen_id[id_perm[:k]] = True

    priority = rng.random(len(keys))  # a random rank for every image
    by_id = np.lexsort((priority, ident))  # grouped by identity, random order inside
    first = np.ones(len(keys), dtype=bool)
    first[1:] = ident[by_id][1:] != ident[by_id][:-1]
    is_first = np.zeros(len(keys), dtype=bool)
    is_first[by_id[first]] = True  # one random image per identity
    in_chosen = chosen_id[ident]
    picked = np.flatnonzero(in_chosen & is_first)  # k images, one per chosen identity
    rest = np.flatnonzero(in_chosen & ~is_first)
    rest = rest[np.argsort(priority[rest], kind="stable")[: n_total - k]]
    return key_arr[np.sort(np.concatenate([picked, rest]))].tolist()  # key_arr is sorted


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_keys(path: str | os.PathLike, keys: Iterable[str]) -> str:
    """Write keys (in the given order) one per line, and PATH.sha256; return the sha256 hex."""
    path = Path(path)
    data = "".join(k + "\n" for k in _check_keys(keys)).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)
    _write_atomic(_sidecar(path), f"{digest}  {path.name}\n".encode("utf-8"))
    return digest


def load_keys(path: str | os.PathLike) -> list[str]:
    """Read a key file written by save_keys, after checking its bytes against PATH.sha256."""
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file():
        raise FileNotFoundError(f"key file not found: {path}")
    if not sidecar.is_file():
        raise FileNotFoundError(f"checksum file not found: {sidecar} (needed to verify {path})")
    data = path.read_bytes()
    fields = sidecar.read_text(encoding="utf-8").split()
    if not fields or len(fields[0]) != 64:
        raise ValueError(f"{sidecar}: line 1 is not 'SHA256  NAME'")
    actual = hashlib.sha256(data).hexdigest()
    if actual != fields[0].lower():
        raise ValueError(f"{path}: sha256 {actual} does not match {fields[0]} recorded in {sidecar}; "
                         "the subset file was modified or truncated")
    text = data.decode("utf-8")
    if text and not text.endswith("\n"):
        raise ValueError(f"{path}: last line has no newline")
    keys = text.split("\n")[:-1]
    seen = {}
    for line_no, key in enumerate(keys, start=1):
        if not key:
            raise ValueError(f"{path}:{line_no}: empty key")
        if key in seen:
            raise ValueError(f"{path}:{line_no}: duplicate key {key!r} (first on line {seen[key]})")
        seen[key] = line_no
    return keys
