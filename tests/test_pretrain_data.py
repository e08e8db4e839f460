"""Pre-training data (pretrain/data.py), the kNN probe's vote (pretrain/knn.py) and the configs."""
import glob
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from common.config import load_config
from pretrain.data import (EpochSampler, ImageDataset, MultiCropTransform, collate_skip_bad, list_images,
                           load_rgb)
from pretrain.knn import knn_accuracy


def _rgb(seed, size=(50, 40)):
    a = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    return Image.fromarray(a)


def test_list_images_from_folders_and_list_files(tmp_path):
    for rel in ("a/2.jpg", "a/sub/1.png", "a/notes.txt", "b/0.JPG"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    listing = tmp_path / "lists" / "mix.txt"
    listing.parent.mkdir()
    listing.write_text("# a comment\n../b/0.JPG\n\n%s\n" % (tmp_path / "a/2.jpg"))
    a = [str(tmp_path / "a/2.jpg"), str(tmp_path / "a/sub/1.png")]
    assert list_images(str(tmp_path / "a")) == a  # recursive, sorted, images only
    files = list_images([str(tmp_path / "a"), str(listing)])
    assert files[:2] == a and len(files) == 4
    assert [p.endswith(e) for p, e in zip(files[2:], ("b/0.JPG", "a/2.jpg"))] == [True, True]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images([str(tmp_path / "a"), str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_images(str(tmp_path / "empty"))


def test_load_rgb_converts_modes_and_rejects_broken_files(tmp_path):
    img = _rgb(0)
    img.convert("CMYK").save(tmp_path / "cmyk.jpg")
    img.convert("L").save(tmp_path / "gray.png")
    img.convert("RGBA").save(tmp_path / "rgba.png")
    img.convert("P").save(tmp_path / "palette.gif")
    img.save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("cmyk.jpg", "gray.png", "rgba.png", "palette.gif", "ok.jpg"):
        out = load_rgb(str(tmp_path / name))
        assert out.mode == "RGB" and out.size == (50, 40), name
    gray = np.asarray(load_rgb(str(tmp_path / "gray.png")))
    assert (gray[..., 0] == gray[..., 2]).all()  # grey replicated to three channels
    for name in ("truncated.jpg", "zero.jpg", "text.jpg", "missing.jpg"):
        assert load_rgb(str(tmp_path / name)) is None, name


def test_multicrop_sizes_and_seeded_determinism(tmp_path):
    _rgb(1, (64, 64)).save(tmp_path / "x.png")
    t = MultiCropTransform(sizes=[32, 16], counts=[2, 3], scales=[(0.14, 1.0), (0.05, 0.14)])
    ds = ImageDataset([str(tmp_path / "x.png")], t)
    crops = ds[(0, 123)]
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    torch.manual_seed(0)
    state = torch.get_rng_state()
    again = ds[(0, 123)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a, b) for a, b in zip(crops, again))
    assert not torch.equal(ds[(0, 124)][0], crops[0])
    assert not torch.equal(crops[0], crops[1])  # two random views of one image


def test_epoch_sampler_global_batches_do_not_depend_on_world_size():
    one = list(EpochSampler(21, batch_size=4, seed=5))  # 5 global batches of 4, 1 sample dropped
    assert len(one) == 20 and len({i for i, _ in one}) == 20
    r0 = list(EpochSampler(21, batch_size=2, rank=0, world_size=2, seed=5))
    r1 = list(EpochSampler(21, batch_size=2, rank=1, world_size=2, seed=5))
    for b in range(5):  # global batch b = rank 0's batch b, then rank 1's
        assert one[4 * b: 4 * b + 4] == r0[2 * b: 2 * b + 2] + r1[2 * b: 2 * b + 2]
    s = EpochSampler(21, batch_size=4, seed=5)
    s.set_epoch(0, start_iter=3)
    assert list(s) == one[12:] and len(s) == 8  # resuming skips consumed batches
    s.set_epoch(1)
    other = list(s)
    assert other != one and sorted(other) != sorted(one)  # new order and new seeds
    s.set_epoch(0)
    assert list(s) == one
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochSampler(3, batch_size=2, world_size=2)


def test_collate_drops_unreadable_samples():
    a = [torch.zeros(3, 4, 4), torch.ones(3, 2, 2)]
    b = [torch.full((3, 4, 4), 2.0), torch.full((3, 2, 2), 3.0)]
    crops, bad = collate_skip_bad([a, None, b, None])
    assert bad == 2 and [tuple(c.shape) for c in crops] == [(2, 3, 4, 4), (2, 3, 2, 2)]
    assert crops[1][1, 0, 0, 0].item() == 3.0
    assert collate_skip_bad([None, None]) == (None, 2)


def test_knn_leave_one_out_vote():
    feats = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [0.6, 0.8]], dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 1])
    # k=1: each sample takes its nearest other sample's label; sample 4 is nearest to 3
    assert knn_accuracy(feats, labels, k=1) == pytest.approx(1.0)
    assert knn_accuracy(feats, np.array([0, 1, 0, 1, 1]), k=1) == pytest.approx(0.2)  # only 4 -> 3 right


def _leaf_paths(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_configs_have_the_same_keys_and_every_key_a_comment(repo_root):
    paths = sorted(glob.glob(os.path.join(repo_root, "pretrain", "configs", "*.yaml")))
    names = [os.path.basename(p) for p in paths]
    assert {"swav_r50.yaml", "swav_r50_bs256.yaml", "moco_r50.yaml", "synthetic.yaml"} <= set(names)
    keys = {n: sorted(_leaf_paths(load_config(p).to_dict())) for n, p in zip(names, paths)}
    assert all(k == keys["synthetic.yaml"] for k in keys.values())
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if re.match(r"\s*\w+:\s*[^\s#]", line):  # a leaf "key: value" line
                    assert "#" in line, f"{path}:{number}: key without a comment"
    paper = load_config(paths[names.index("swav_r50.yaml")])
    assert (paper.data.batch_size, paper.optim.lr, paper.optim.final_lr, paper.optim.weight_decay,
            paper.optim.epochs, paper.optim.warmup_epochs, paper.swav.temperature, paper.swav.epsilon,
            paper.aug.crop_sizes, paper.aug.crop_counts) == (4096, 4.8, 0.045, 1e-6, 200, 10, 0.1, 0.05,
                                                             [224, 96], [2, 6])  # App. A.1


def _png_rgb16(path, rgb):
    """A 16-bit-per-channel RGB PNG written by hand (colour type 2, bit depth 16)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_images_keep_their_top_8_bits(tmp_path):
    from pretrain.fast_multicrop import load_image
    grey = (np.arange(40 * 50).reshape(40, 50) * 31 % 65536).astype(np.uint16)    # 0 .. 65535, mostly > 255
    Image.fromarray(grey).save(tmp_path / "grey16.png")                             # mode I;16
    Image.frombytes("I;16B", (50, 40), grey.astype(">u2").tobytes()).save(tmp_path / "grey16b.tif")
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "grey32.tif")            # mode I
    rgb = np.random.default_rng(0).integers(0, 65536, (40, 50, 3)).astype(np.uint16)
    _png_rgb16(tmp_path / "rgb16.png", rgb)
    for name in ("grey16.png", "grey16b.tif", "grey32.tif"):
        out = np.asarray(load_rgb(str(tmp_path / name)))
        assert out.dtype == np.uint8 and (out == (grey >> 8)[..., None]).all(), name
    assert (np.asarray(load_rgb(str(tmp_path / "rgb16.png"))) == rgb >> 8).all()
    img, size = load_image(str(tmp_path / "grey16.png"))                           # the fast pipeline's decoder
    assert img.dtype == torch.uint8 and size == (40, 50) and (img.numpy() == (grey >> 8)[None]).all()
    img, _ = load_image(str(tmp_path / "rgb16.png"))
    assert (img.permute(1, 2, 0).numpy() == rgb >> 8).all()


def test_unreadable_images_are_named_in_the_log(tmp_path, capsys):
    paths = [str(tmp_path / f"bad{i:02d}.jpg") for i in range(12)]
    for p in paths:
        open(p, "wb").write(b"not an image")
    ds = ImageDataset(paths, MultiCropTransform(sizes=[16], counts=[1], scales=[(0.5, 1.0)]))
    assert all(ds[(i, 0)] is None for i in range(12))
    out = capsys.readouterr().out
    assert [p for p in paths if p in out] == paths[:10]                            # the first 10 by name
    assert "further ones are only counted" in out
