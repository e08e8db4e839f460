"""Tests for common.subsample: deterministic subsets, the identity-preserving variant, key files."""
import hashlib
import math
import random

import numpy as np
import pytest

from common.subsample import load_keys, save_keys, subset_by_identity, subset_keys

KEYS = [f"id{i % 37:03d}/img{i:05d}.jpg" for i in range(1000)]


def test_subset_is_independent_of_key_order_and_sorted():
    shuffled = KEYS[:]
    random.Random(3).shuffle(shuffled)
    a = subset_keys(KEYS, 0.1, seed=0)
    assert subset_keys(shuffled, 0.1, seed=0) == a
    assert a == sorted(a) and len(set(a)) == 100 and set(a) <= set(KEYS)


def test_subset_golden_value():
    # Pinned: sorted keys, numpy Generator(PCG64(7)).permutation(20)[:5], sorted. A change here
    # means old subsets can no longer be re-derived from their seed.
    keys = [f"img{i:02d}.jpg" for i in range(20)]
    assert subset_keys(keys, 0.25, seed=7) == ["img03.jpg", "img08.jpg", "img12.jpg", "img13.jpg", "img14.jpg"]


def test_subset_seed_fraction_and_sizes():
    assert subset_keys(KEYS, 0.1, seed=0) != subset_keys(KEYS, 0.1, seed=1)
    assert subset_keys(list(reversed(KEYS)), 1.0, seed=5) == sorted(KEYS)
    assert len(subset_keys(KEYS, 0.02, seed=0)) == 20
    ten = [str(i) for i in range(10)]
    assert len(subset_keys(ten, 0.25, seed=0)) == 3  # 2.5 rounds half up
    assert len(subset_keys(ten, 0.01, seed=0)) == 1  # never empty
    assert len(subset_keys([str(i) for i in range(35)], 0.1, seed=0)) == 4  # 3.5 -> 4
    assert set(subset_keys(KEYS, 0.02, seed=4)) <= set(subset_keys(KEYS, 0.1, seed=4))  # nested


@pytest.mark.parametrize("keys, fraction, match", [
    (KEYS, 0.0, "fraction"), (KEYS, 1.5, "fraction"), (["a", "b", "a"], 0.5, "duplicate"),
    (["a", "b\nc"], 0.5, "single-line"), ([], 0.5, "no keys"),
])
def test_subset_rejects_bad_input(keys, fraction, match):
    with pytest.raises(ValueError, match=match):
        subset_keys(keys, fraction, seed=0)


def test_save_load_round_trip_and_tamper(tmp_path):
    keys = subset_keys(KEYS, 0.05, seed=2)
    path = tmp_path / "subsets" / "train_5pc.txt"
    digest = save_keys(path, keys)
    data = path.read_bytes()
    assert data == ("\n".join(keys) + "\n").encode()
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "subsets" / "train_5pc.txt.sha256").read_text() == f"{digest}  train_5pc.txt\n"
    assert load_keys(path) == keys

    path.write_bytes(data.replace(keys[0].encode(), keys[0].replace("img", "imh").encode()))
    with pytest.raises(ValueError, match="train_5pc.txt: sha256"):
        load_keys(path)
    path.write_bytes(data[:-1])  # truncated
    with pytest.raises(ValueError, match="does not match"):
        load_keys(path)
    path.write_bytes(data)
    assert load_keys(path) == keys
    (tmp_path / "subsets" / "train_5pc.txt.sha256").unlink()
    with pytest.raises(FileNotFoundError, match="train_5pc.txt.sha256"):
        load_keys(path)


def _face_set(n_ids=200, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 80, size=n_ids)
    keys, ids = [], []
    for i, c in enumerate(counts):
        keys += [f"n{i:04d}/{j:04d}.jpg" for j in range(c)]
        ids += [f"n{i:04d}"] * int(c)
    return keys, ids


def test_identity_subset_keeps_a_quarter_of_identities_at_2pc():
    keys, ids = _face_set()
    id_of = dict(zip(keys, ids))
    sub = subset_by_identity(keys, ids, 0.02, seed=0)
    n_expected = math.floor(0.02 * len(keys) + 0.5)
    assert len(sub) == n_expected and len(set(sub)) == n_expected and sub == sorted(sub)
    kept = {id_of[k] for k in sub}
    assert len(kept) == 50  # ceil(200 / 4), and 2 % of the images is enough to fill it
    # Plain image sampling would spread the same budget over many more identities.
    assert len({id_of[k] for k in subset_keys(keys, 0.02, seed=0)}) > 100
    order = list(range(len(keys)))
    random.Random(1).shuffle(order)
    assert subset_by_identity([keys[i] for i in order], [ids[i] for i in order], 0.02, seed=0) == sub
    assert subset_by_identity(keys, ids, 0.02, seed=1) != sub
    assert subset_by_identity(keys, ids, 1.0, seed=3) == sorted(keys)


def test_identity_subset_adds_identities_when_too_few_images():
    # Four identities of one image and one of 96: 50 % -> 50 images, k = ceil(0.5 * 5) = 3; any
    # 3 identities without "big" hold 3 images, so identities are added until "big" is in.
    keys = [f"small{i}" for i in range(4)] + [f"big{j:02d}" for j in range(96)]
    ids = [f"s{i}" for i in range(4)] + ["big"] * 96
    for seed in range(5):
        sub = subset_by_identity(keys, ids, 0.5, seed=seed)
        assert len(sub) == 50
        n_small = sum(k.startswith("small") for k in sub)
        assert n_small + 1 >= 3 and any(k.startswith("big") for k in sub)


def test_identity_subset_rejects_impossible_budget():
    keys, ids = _face_set(n_ids=200)
    small = keys[:: 40]  # about 1 image per identity: 2 % cannot cover 50 identities
    with pytest.raises(ValueError, match="cannot cover"):
        subset_by_identity(small, [ids[keys.index(k)] for k in small], 0.02, seed=0)
    with pytest.raises(ValueError, match="identities"):
        subset_by_identity(keys, ids[:-1], 0.02, seed=0)
