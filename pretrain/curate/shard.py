"""Pack a pre-training image list into tar shards with an offset index (paper App. A.1: 1.8M-5M
face crops read by 64 GPUs), read back by pretrain.shards.

    python -m pretrain.curate.shard --list L.txt --out DIR [--shard-size 1GB] [--labels LABELS.txt] \\
        [--seed 0 | --keep-order] [--skip-missing]
    python -m pretrain.curate.shard --verify DIR

--list takes what pretrain.train's data.root takes (list files and/or folders, repeatable). The
images are shuffled (``--seed``) before packing so each shard is a random sample of the set (see
pretrain/shards.py for why the reader needs that), and their bytes are stored unchanged: an
unreadable image is packed as it is and skipped and counted at training time, exactly as the
folder reader does. A listed file that does not exist is an error (``--skip-missing``: skipped and
counted in index.json). ``--labels`` is a text file with one label per listed image (same order);
labels are stored as ``NNNNNNNNN.label`` members and in the index.

Shards are POSIX ustar archives written with the standard library (member ``NNNNNNNNN.<ext>``,
NNNNNNNNN the position in the packed order, mtime 0, uid/gid 0): any tar tool lists them, and
the same list and seed give byte-identical shards. Every member header is one 512-byte block, so
a member's data starts 512 bytes after the archive position where it was added; index.npz
records that offset per sample. Shards and index files are written atomically; index.json is
written last.
"""
import argparse
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile

import numpy as np

from common.files import write_json
from common.logger import log, progress
from pretrain.data import list_images
from pretrain.shards import FORMAT, INDEX_JSON, INDEX_NPZ, VERSION

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_HEADER = 512  # one ustar header block per member (names are short, no pax/GNU extensions)


def parse_size(text: str) -> int:
    """Bytes in '1GB', '500MB', '64KiB', '2.5GB' or '1048576' (decimal and binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"shard size {text!r}: expected a number with an optional unit {sorted(_UNITS)}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 2 * _HEADER:
        raise ValueError(f"shard size {text!r} is smaller than one tar member")
    return size


def _member_bytes(size: int) -> int:
    return _HEADER + -(-size // _HEADER) * _HEADER


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def read_labels(path: str, n: int) -> list:
    """One label string per line of ``path``; the count must equal the number of listed images."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file not found: {path}")
    with open(path, encoding="utf-8") as f:
        labels = f.read().splitlines()
    if len(labels) != n:
        raise ValueError(f"{path}: {len(labels)} labels for {n} listed images (one label per line, in list order)")
    return labels


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class _ShardWriter:
    """Writes one tar shard to a temporary file, renamed into place by close()."""

    def __init__(self, out_dir: str, number: int):
        self.name = f"shard-{number:06d}.tar"
        self.path = os.path.join(out_dir, self.name)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.name}.", suffix=".tmp", dir=out_dir)
        self.file = os.fdopen(fd, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples, self.used = 0, 0

    def add(self, name: str, data: bytes) -> int:
        """Append a member; returns the byte offset of its data inside the shard."""
        offset = self.tar.offset + _HEADER
        self.tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
        self.used += _member_bytes(len(data))
        return offset

    def close(self) -> dict:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return {"name": self.name, "bytes": os.path.getsize(self.path), "samples": self.samples,
                "sha256": _sha256(self.path)}


def _packed(strings: list) -> tuple:
    encoded = [s.encode("utf-8") for s in strings]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return data, np.cumsum([len(e) for e in encoded], dtype=np.int64)


def _save_npz(path: str, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".npz", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def write_shards(paths: list, out_dir: str, *, shard_size: int, labels=None, seed=0, skip_missing=False,
                 source="") -> dict:
    """Pack the files ``paths`` (with optional ``labels``, one per path) into tar shards in
    ``out_dir``; ``seed`` None keeps the order, otherwise the order is a permutation drawn from it.
    Returns the index.json dict."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} images")
    if not paths:
        raise ValueError("no images to pack")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, INDEX_JSON)):
        raise FileExistsError(f"{out_dir} already holds shards ({INDEX_JSON}); choose an empty --out folder")
    order = np.arange(len(paths)) if seed is None else np.random.default_rng(seed).permutation(len(paths))
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    shards, writer, missing = [], None, []
    shard_of, offset, size, keys, kept_labels = [], [], [], [], []
    for i in progress(order.tolist(), desc="pack", total=len(order)):
        try:
            with open(paths[i], "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if not skip_missing:
                raise FileNotFoundError(f"listed image not found: {paths[i]} (pass --skip-missing to skip "
                                        f"and count such files)") from None
            missing.append(paths[i])
            continue
        label = None if labels is None else labels[i].encode("utf-8")
        need = _member_bytes(len(data)) + (0 if label is None else _member_bytes(len(label)))
        if writer is not None and writer.samples and writer.used + need + 2 * _HEADER > shard_size:
            shards.append(writer.close())
            writer = None
        if writer is None:
            writer = _ShardWriter(out_dir, len(shards))
        n = len(keys)
        ext = os.path.splitext(paths[i])[1].lower()[:8] or ".bin"
        offset.append(writer.add(f"{n:09d}{ext}", data))
        if label is not None:
            writer.add(f"{n:09d}.label", label)
            kept_labels.append(labels[i])
        writer.samples += 1
        shard_of.append(len(shards))
        size.append(len(data))
        keys.append(os.path.relpath(os.path.abspath(paths[i]), common))
    if writer is not None:
        shards.append(writer.close())
    if not keys:
        raise ValueError(f"none of the {len(paths)} listed images exists")
    key_bytes, key_end = _packed(keys)
    arrays = {"shard": np.asarray(shard_of, np.int32), "offset": np.asarray(offset, np.int64),
              "size": np.asarray(size, np.int64), "key_bytes": key_bytes, "key_end": key_end}
    if labels is not None:
        arrays["label_bytes"], arrays["label_end"] = _packed(kept_labels)
    _save_npz(os.path.join(out_dir, INDEX_NPZ), arrays)
    meta = {"format": FORMAT, "version": VERSION, "n_samples": len(keys), "shards": shards,
            "labels": labels is not None, "seed": seed, "shard_size": shard_size, "source": source,
            "key_root": common, "missing": len(missing), "missing_first": missing[:20]}
    write_json(os.path.join(out_dir, INDEX_JSON), meta)
    return meta


def verify_shards(out_dir: str) -> list:
    """Names of the shards whose size or sha256 differs from index.json (empty: all intact)."""
    with open(os.path.join(out_dir, INDEX_JSON)) as f:
        meta = json.load(f)
    bad = []
    for entry in progress(meta["shards"], desc="verify"):
        path = os.path.join(out_dir, entry["name"])
        if (not os.path.isfile(path) or os.path.getsize(path) != entry["bytes"]
                or _sha256(path) != entry["sha256"]):
            bad.append(entry["name"])
    return bad


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pack pre-training images into tar shards with an offset index.")
    parser.add_argument("--list", action="append", help="list file or image folder (repeatable), as data.root")
    parser.add_argument("--out", help="output folder (must not hold shards yet)")
    parser.add_argument("--shard-size", default="1GB", help="target shard size, e.g. 1GB, 500MB (default 1GB)")
    parser.add_argument("--labels", default=None, help="text file: one label per listed image, in list order")
    parser.add_argument("--seed", type=int, default=0, help="seed of the packing order (default 0)")
    parser.add_argument("--keep-order", action="store_true", help="pack in list order (not shuffled)")
    parser.add_argument("--skip-missing", action="store_true", help="skip (and count) listed files that do not exist")
    parser.add_argument("--verify", metavar="DIR", help="check the sizes and sha256 of the shards in DIR")
    args = parser.parse_args(argv)
    if args.verify:
        bad = verify_shards(args.verify)
        print(f"{args.verify}: " + (f"{len(bad)} damaged shard(s): {' '.join(bad)}" if bad else "all shards intact"))
        raise SystemExit(1 if bad else 0)
    if not args.list or not args.out:
        parser.error("--list and --out are required (or --verify DIR)")
    try:
        paths = list_images(args.list)
        labels = read_labels(args.labels, len(paths)) if args.labels else None
        meta = write_shards(paths, args.out, shard_size=parse_size(args.shard_size), labels=labels,
                            seed=None if args.keep_order else args.seed, skip_missing=args.skip_missing,
                            source=" ".join(args.list))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"pretrain.curate.shard: {e}") from None
    total = sum(s["bytes"] for s in meta["shards"])
    log(f"{meta['n_samples']} images in {len(meta['shards'])} shards ({total / 1e9:.2f} GB) in {args.out}; "
        f"missing {meta['missing']}")


if __name__ == "__main__":
    main()
