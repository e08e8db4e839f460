"""Tar shards (pretrain/curate/shard.py) and the shard reader / sampler (pretrain/shards.py).

- Packing keeps every file's bytes, label and key; the tar is standard (tarfile finds each member
  at the indexed offset); the same list and seed give byte-identical shards; --verify finds a
  damaged shard.
- 2 ranks x 2 DataLoader workers read every sample exactly once per epoch, the global batches are
  those of 1 rank, the order is shard-local and a function of (seed, epoch).
- Resuming at batch k reads exactly the samples after the first k global batches.
- pretrain.train runs on a shard folder and counts unreadable samples like the folder reader.
"""
import hashlib
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from common.config import load_config
from common.logger import read_jsonl
from pretrain.curate.shard import main as shard_main
from pretrain.curate.shard import parse_size, verify_shards, write_shards
from pretrain.data import collate_skip_bad, list_images
from pretrain.shards import ShardDataset, ShardEpochSampler, ShardIndex, open_pretrain_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_GOOD = 38


def _identity(img):
    """The sample number painted into the image: R + 256 G (one 'crop' per sample)."""
    px = np.asarray(img)[0, 0].astype(np.int64)
    return [torch.tensor([px[0] + 256 * px[1]])]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """38 PNGs of growing size whose colour encodes their number, one zero-byte and one truncated
    JPEG (unreadable: packed anyway, skipped at read time), a list file and a label file."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(N_GOOD):
        size = 8 + 2 * i
        path = root / f"sub{i % 3}" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((size, size, 3), (i % 256, i // 256, 77), np.uint8)).save(path)
        paths.append(str(path))
    (root / "zero.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "full.jpg")
    (root / "truncated.jpg").write_bytes((root / "full.jpg").read_bytes()[:100])
    paths += [str(root / "zero.jpg"), str(root / "truncated.jpg")]
    listing = root / "list.txt"
    listing.write_text("\n".join(os.path.relpath(p, root) for p in paths) + "\n")
    labels = root / "labels.txt"
    labels.write_text("\n".join(f"id{i % 5}" for i in range(len(paths))) + "\n")
    return {"root": root, "paths": paths, "list": str(listing), "labels": str(labels)}


@pytest.fixture(scope="module")
def shards(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    shard_main(["--list", images["list"], "--out", str(out), "--shard-size", "6KB", "--labels", images["labels"],
                "--seed", "3"])
    return str(out)


def test_parse_size():
    assert parse_size("1GB") == 10**9 and parse_size("500MB") == 5 * 10**8
    assert parse_size("64KiB") == 65536 and parse_size("2.5gb") == 2_500_000_000 and parse_size("4096") == 4096
    for bad in ("1 parsec", "GB", "-1GB", "10"):
        with pytest.raises(ValueError, match="shard size"):
            parse_size(bad)


def test_pack_keeps_bytes_labels_keys_and_is_a_standard_tar(images, shards):
    with open(os.path.join(shards, "index.json")) as f:
        meta = json.load(f)
    index = ShardIndex(shards)
    n = len(images["paths"])
    assert len(index) == meta["n_samples"] == n and len(meta["shards"]) > 3 and meta["labels"]
    by_key = {os.path.relpath(p, images["root"]): i for i, p in enumerate(images["paths"])}
    order = [by_key[index.key(i)] for i in range(n)]
    assert sorted(order) == list(range(n)) and order != list(range(n))  # every file once, shuffled
    dataset = ShardDataset(index, _identity)
    for i, src in enumerate(order):
        with open(images["paths"][src], "rb") as f:
            assert dataset.read_bytes(i) == f.read()
        assert index.label(i) == f"id{src % 5}"
    for s, entry in enumerate(meta["shards"]):
        path = os.path.join(shards, entry["name"])
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
        assert entry["bytes"] == os.path.getsize(path) <= 6000 + tarfile.RECORDSIZE  # target + tar record padding
        in_shard = np.flatnonzero(index.shard == s)
        assert len(in_shard) == entry["samples"]
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            data = [m for m in members if not m.name.endswith(".label")]
            assert [m.offset_data for m in data] == index.offset[in_shard].tolist()
            assert [m.size for m in data] == index.size[in_shard].tolist()
            label = tar.extractfile([m for m in members if m.name.endswith(".label")][0]).read().decode()
            assert label == index.label(int(in_shard[0]))
    # the readable samples decode to their own number, the two broken files to None
    decoded = [dataset[(i, 0)] for i in range(n)]
    assert [d is None for d in decoded] == [src >= N_GOOD for src in order]
    assert [int(d[0]) for d in decoded if d is not None] == [src for src in order if src < N_GOOD]


def test_same_seed_same_bytes_keep_order_and_verify(images, shards, tmp_path):
    paths, labels = images["paths"], open(images["labels"]).read().splitlines()
    again = write_shards(paths, str(tmp_path / "again"), shard_size=6000, labels=labels, seed=3)
    with open(os.path.join(shards, "index.json")) as f:
        assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in json.load(f)["shards"]]
    kept = write_shards(paths, str(tmp_path / "kept"), shard_size=10**6, seed=None)
    index = ShardIndex(str(tmp_path / "kept"))
    assert len(kept["shards"]) == 1 and index.label(0) is None
    assert [index.key(i) for i in range(len(paths))] == [os.path.relpath(p, images["root"]) for p in paths]
    assert verify_shards(str(tmp_path / "again")) == []
    victim = tmp_path / "again" / again["shards"][1]["name"]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert verify_shards(str(tmp_path / "again")) == [again["shards"][1]["name"]]
    with pytest.raises(FileExistsError, match="already holds shards"):
        write_shards(paths, str(tmp_path / "kept"), shard_size=10**6)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_shards(paths + [str(tmp_path / "nope.png")], str(tmp_path / "missing"), shard_size=10**6)
    skipped = write_shards(paths + [str(tmp_path / "nope.png")], str(tmp_path / "skip"), shard_size=10**6,
                           skip_missing=True)
    assert (skipped["n_samples"], skipped["missing"]) == (len(paths), 1)


def _read_epoch(dataset, shard_of, *, epoch, start_iter=0, world_size, batch_size, workers, seed=5, window=8):
    """Per rank: the list of batches, each the sample numbers read plus the None count."""
    out = []
    for rank in range(world_size):
        sampler = ShardEpochSampler(shard_of, shuffle_window=window, batch_size=batch_size, rank=rank,
                                    world_size=world_size, seed=seed)
        sampler.set_epoch(epoch, start_iter)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                                             num_workers=workers, collate_fn=collate_skip_bad)
        out.append([(sorted(c[0].view(-1).tolist()) if c else [], bad) for c, bad in loader])
    return out


def test_two_ranks_two_workers_read_every_sample_once_per_epoch(shards):
    index = ShardIndex(shards)
    dataset = ShardDataset(index, _identity)
    n = len(index)  # 40 = 5 global batches of 2 ranks x 4
    per_rank = _read_epoch(dataset, index.shard, epoch=1, world_size=2, batch_size=4, workers=2)
    assert [len(batches) for batches in per_rank] == [5, 5]
    seen = [s for batches in per_rank for ids, _ in batches for s in ids]
    bad = sum(b for batches in per_rank for _, b in batches)
    assert sorted(seen) == list(range(N_GOOD)) and bad == n - N_GOOD == 2
    one_rank = _read_epoch(dataset, index.shard, epoch=1, world_size=1, batch_size=8, workers=0)[0]
    merged = [(sorted(a + b), x + y) for (a, x), (b, y) in zip(*per_rank)]
    assert merged == one_rank  # the same global batches on 1 and 2 ranks
    other = _read_epoch(dataset, index.shard, epoch=2, world_size=1, batch_size=8, workers=0)[0]
    assert other != one_rank and sorted(s for ids, _ in other for s in ids) == list(range(N_GOOD))


def test_order_is_a_shard_local_permutation(shards):
    index = ShardIndex(shards)
    sampler = ShardEpochSampler(index.shard, shuffle_window=8, batch_size=40, seed=5)
    order = sampler.permutation(np.random.default_rng([5, 0]))
    assert sorted(order.tolist()) == list(range(len(index)))
    same = sampler.permutation(np.random.default_rng([5, 0]))
    assert np.array_equal(order, same)
    window_of_position = np.arange(len(order)) // 8
    spans = []  # per shard: the windows its samples fall in
    for s in range(int(index.shard.max()) + 1):
        w = np.unique(window_of_position[index.shard[order] == s])
        assert w.max() - w.min() + 1 == len(w)  # a contiguous run of windows
        spans.append((w.min(), w.max()))
    spans.sort()
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))  # shards laid out one after another
    assert not np.array_equal(order, sampler.permutation(np.random.default_rng([5, 1])))
    glob = ShardEpochSampler(index.shard, shuffle_window=0, batch_size=40, seed=5)
    assert np.array_equal(glob.permutation(np.random.default_rng(9)), np.random.default_rng(9).permutation(len(index)))


def test_resume_mid_epoch_reads_only_the_remaining_samples(shards):
    index = ShardIndex(shards)
    dataset = ShardDataset(index, _identity)
    full = _read_epoch(dataset, index.shard, epoch=3, world_size=2, batch_size=4, workers=0)
    resumed = _read_epoch(dataset, index.shard, epoch=3, start_iter=2, world_size=2, batch_size=4, workers=2)
    assert resumed == [batches[2:] for batches in full]
    consumed = {s for batches in full for ids, _ in batches[:2] for s in ids}
    rest = {s for batches in resumed for ids, _ in batches for s in ids}
    assert not consumed & rest and len(consumed | rest) == N_GOOD


def test_open_pretrain_data_errors(images, shards, tmp_path):
    dataset, sampler = open_pretrain_data(os.path.join(shards, "index.json"), _identity, batch_size=4, rank=0,
                                          world_size=2, seed=0, shuffle_window=8)
    assert isinstance(dataset, ShardDataset) and sampler.iters_per_epoch == 5
    dataset, _ = open_pretrain_data(images["list"], _identity, batch_size=4, rank=0, world_size=1, seed=0,
                                    shuffle_window=8)
    assert dataset.paths == list_images(images["list"])
    with pytest.raises(ValueError, match="mixes shard folders"):
        open_pretrain_data([shards, images["list"]], _identity, batch_size=4, rank=0, world_size=1, seed=0,
                           shuffle_window=8)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(shards):
        (copy / name).write_bytes(open(os.path.join(shards, name), "rb").read())
    (copy / "shard-000001.tar").write_bytes((copy / "shard-000001.tar").read_bytes()[:-10])
    with pytest.raises(ValueError, match="shard-000001.tar: .* bytes, the index says"):
        open_pretrain_data(str(copy), _identity, batch_size=4, rank=0, world_size=1, seed=0, shuffle_window=8)
    (copy / "shard-000001.tar").write_bytes(open(os.path.join(shards, "shard-000001.tar"), "rb").read())
    os.remove(copy / "shard-000002.tar")
    with pytest.raises(FileNotFoundError, match="shard-000002.tar"):
        ShardIndex(str(copy)).check_files()
    (copy / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match="index.json: invalid JSON at line 1"):
        ShardIndex(str(copy))


def test_pretrain_train_reads_shards_and_counts_unreadable_samples(shards, tmp_path):
    from pretrain.train import main
    out = str(tmp_path / "run")
    cfg = load_config(os.path.join(ROOT, "pretrain", "configs", "synthetic.yaml"), [
        f"data.root={shards}", f"out={out}", "data.batch_size=20", "data.shuffle_window=16", "optim.epochs=1",
        "aug.crop_sizes=[16,8]", "aug.crop_counts=[2,0]", "model.hidden_dim=16", "export_at_end=false"])
    main(cfg)
    records = read_jsonl(os.path.join(out, "log.jsonl"))
    epoch = [r for r in records if "skipped" in r]
    assert [(r["images"], r["skipped"]) for r in epoch] == [(N_GOOD, 2)]
    assert sorted(r["step"] for r in records if "iter" in r) == [0, 1]
