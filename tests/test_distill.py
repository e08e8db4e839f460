"""Self-distillation pool, leakage guard, unlabelled crops and teacher targets (paper §3.5, §4 Figs. 3-4)."""
import json
import os
import shutil

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from distill import leakage, pool
from distill.data import UnlabelledDataset, labelled_mask
from distill.teacher import check_teacher, teacher_targets
from distill.leakage import checked_pool
from landmarks import formats
from landmarks.data import IMAGENET_MEAN, IMAGENET_STD, LandmarkDataset
from landmarks.heatmaps import render_heatmaps


def _write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_pool_list_reads_both_line_forms(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "pool.txt",
           ["# a comment", "sub/a.jpg", "300w\tafw/1\t/abs/b.jpg\t1 2 11 22", "", "x\tk\tc.png\t-"])
    p = pool.read_pool(tmp_path / "pool.txt")
    assert p.paths == [str(tmp_path / "sub" / "a.jpg"), "/abs/b.jpg", str(tmp_path / "c.png")]
    assert p.sources == ["list", "300w", "x"] and p.keys == ["list/sub/a.jpg", "300w/afw/1", "x/k"]
    np.testing.assert_array_equal(p.boxes[1], [1, 2, 11, 22])
    assert np.isnan(p.boxes[[0, 2]]).all() and p.comments == ["# a comment"]
    pool.write_pool(tmp_path / "again.txt", p)                                  # round trip
    q = pool.read_pool(tmp_path / "again.txt")
    assert q.keys == p.keys and q.paths == p.paths and np.array_equal(q.boxes, p.boxes, equal_nan=True)
    _write(tmp_path / "bad.txt", ["a.jpg", "s\tk\tb.jpg\t5 5 1 1"])
    with pytest.raises(pool.PoolFormatError, match=r"bad.txt:2: box"):
        pool.read_pool(tmp_path / "bad.txt")
    _write(tmp_path / "bad2.txt", ["s\tk\tb.jpg"])
    with pytest.raises(pool.PoolFormatError, match=r"bad2.txt:1: expected"):
        pool.read_pool(tmp_path / "bad2.txt")


def test_take_fills_sources_in_order_and_nests():
    names = [("a", f"a{i}") for i in range(3)] + [("b", f"b{i}") for i in range(5)]
    p = pool.Pool([s for s, _ in names], [f"{s}/{k}" for s, k in names], [k for _, k in names], np.full((8, 4), np.nan))
    one, wanted = pool.take(p, amount=1.0, reference_size=3, seed=0)
    assert wanted == 3 and sorted(one.paths) == ["a0", "a1", "a2"]            # 100 % = the first source
    small, _ = pool.take(p, amount=5 / 3, reference_size=3, seed=0)
    big, _ = pool.take(p, amount=7 / 3, reference_size=3, seed=0)
    assert len(small) == 5 and len(big) == 7 and set(small.paths) < set(big.paths)
    everything, wanted = pool.take(p, amount=None, reference_size=3, seed=0)
    assert wanted is None and sorted(everything.paths) == sorted(p.paths)
    capped, wanted = pool.take(p, amount=10.0, reference_size=3, seed=0)
    assert len(capped) == 8 and wanted == 30                                   # capped; the request is reported


def _cofw_train(root):
    """A COFW_train.mat as in COFW.zip: IsTr cells (grayscale), bboxesTr [x y w h] 1-based, phisTr."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0] = rng.integers(0, 255, (40, 30), dtype=np.uint8)
    cells[1, 0] = rng.integers(0, 255, (36, 36), dtype=np.uint8)
    phis = np.concatenate([np.full((2, 29), 11.0), np.full((2, 29), 21.0), np.zeros((2, 29))], axis=1)
    phis[:, 0], phis[:, 29] = 5.0, 6.0
    boxes = np.array([[3.0, 4.0, 20.0, 25.0], [2.0, 2.0, 30.0, 30.0]])
    scipy.io.savemat(os.path.join(root, "COFW_train.mat"), {"IsTr": cells, "bboxesTr": boxes, "phisTr": phis})
    return cells


def test_builder_takes_training_images_only(synthetic_root, tmp_path):
    s = synthetic_root
    cells = _cofw_train(tmp_path / "COFW")
    out = tmp_path / "pool.txt"
    pool.main(["--out", str(out), "--dataset", f"300w={s / '300W'}", "--dataset", f"wflw={s / 'WFLW'}",
               "--dataset", f"aflw19={s / 'AFLW'}", "--dataset", f"cofw={tmp_path / 'COFW'}",
               "--dataset", f"folder={s / 'unlabelled'}"])
    p = pool.read_pool(out)
    counts = {src: p.sources.count(src) for src in pool.SOURCES}
    assert counts == {"300w": 6, "wflw": 6, "aflw19": 8, "cofw": 2, "folder": 24}
    assert p.sources == sorted(p.sources, key=["300w", "wflw", "aflw19", "cofw", "folder"].index)
    folders = {"300w": "300W", "wflw": "WFLW", "aflw19": "AFLW"}
    tests = {os.path.realpath(i) for ds, folder in folders.items() for sp in leakage.TEST_SPLITS[ds]
             for i in formats.load_split(ds, s / folder, sp).images}
    assert not tests & {os.path.realpath(x) for x in p.paths}
    # 300W boxes are the iBUG detector boxes (1-based in the .mat), matched by image name
    entry = scipy.io.loadmat(s / "300W" / "Bounding Boxes" / "bounding_boxes_afw.mat")["bounding_boxes"][0][0][0, 0]
    i = next(k for k, x in enumerate(p.paths) if os.path.basename(x) == entry["imgName"][0])
    np.testing.assert_allclose(p.boxes[i], entry["bb_detector"].reshape(4) - 1.0, atol=0.005)
    # COFW: images extracted losslessly, box [x y w h] 1-based -> x1 y1 x2 y2 0-based
    j = p.sources.index("cofw")
    assert np.array_equal(np.asarray(Image.open(p.paths[j])), cells[0, 0])
    np.testing.assert_allclose(p.boxes[j], [2.0, 3.0, 22.0, 28.0])
    assert np.isnan(p.boxes[[k for k, src in enumerate(p.sources) if src == "folder"]]).all()


def test_builder_drops_a_renamed_copy_of_a_test_image(synthetic_root, tmp_path):
    test_image = formats.load_split("300w", synthetic_root / "300W", "challenging").images[0]
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copy(test_image, folder / "holiday.jpg")
    shutil.copy(formats.load_split("300w", synthetic_root / "300W", "train").images[0], folder / "other.jpg")
    out = tmp_path / "pool.txt"
    pool.main(["--out", str(out), "--dataset", f"folder={folder}",
               "--exclude-test-of", f"300w={synthetic_root / '300W'}"])
    p = pool.read_pool(out)
    assert [os.path.basename(x) for x in p.paths] == ["other.jpg"]
    assert any("dropped 1 entries" in c for c in p.comments)


def _list(path, images):
    _write(path, [str(x) for x in images])
    return str(path)


def test_training_refuses_a_pool_holding_test_images(synthetic_root, tmp_path):
    root = synthetic_root / "300W"
    train = formats.load_split("300w", root, "train").images
    test_image = formats.load_split("300w", root, "common").images[0]
    clean = _list(tmp_path / "clean.txt", train)
    assert len(checked_pool(list_path=clean, dataset="300w", root=str(root), exclude=[])) == 6
    by_path = _list(tmp_path / "by_path.txt", [*train, test_image])
    with pytest.raises(leakage.LeakageError, match="same file as 300w/full/"):
        checked_pool(list_path=by_path, dataset="300w", root=str(root), exclude=[])
    os.symlink(test_image, tmp_path / "link.jpg")                                # resolved path
    with pytest.raises(leakage.LeakageError, match="same file as"):
        checked_pool(list_path=_list(tmp_path / "link.txt", [tmp_path / "link.jpg"]), dataset="300w",
                     root=str(root), exclude=[])
    shutil.copy(test_image, tmp_path / "renamed_copy.jpg")                      # byte-identical, other name
    with pytest.raises(leakage.LeakageError, match="renamed_copy.jpg: byte-identical to 300w/full/"):
        checked_pool(list_path=_list(tmp_path / "copy.txt", [*train, tmp_path / "renamed_copy.jpg"]),
                     dataset="300w", root=str(root), exclude=[])
    # COFW-68 keeps its test images inside a .mat: a PNG of one is found by its pixels
    cofw = formats.load_split("cofw68", synthetic_root / "COFW68", "test")
    Image.fromarray(cofw.images[1]).save(tmp_path / "cofw_face.png")
    with pytest.raises(leakage.LeakageError, match="same pixels as cofw68/test/COFW_test#2"):
        checked_pool(list_path=_list(tmp_path / "cofw.txt", [*train, tmp_path / "cofw_face.png"]), dataset="300w",
                     root=str(root), exclude=[f"cofw68={synthetic_root / 'COFW68'}"])


def test_unlabelled_crops_match_labelled_items_and_skip_corrupt_files(synthetic_root, tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "face.png")
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    ds = UnlabelledDataset([tmp_path / "face.png"] * 2, [[np.nan] * 4, [7.5, 7.5, 23.5, 23.5]], n_points=68,
                           input_size=16, box_scale=1.0)
    whole, boxed = ds[0], ds[1]
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    small = torch.nn.functional.avg_pool2d(expected[None], 2)[0]               # 32 -> 16 at exact pixel pairs
    torch.testing.assert_close(whole["image"] * std + mean, small, atol=1e-5, rtol=0)
    torch.testing.assert_close(boxed["image"] * std + mean, expected[:, 8:24, 8:24], atol=1e-5, rtol=0)
    assert torch.isnan(whole["points"]).all() and whole["points"].shape == (68, 2) and whole["valid"]
    train = formats.load_split("300w", synthetic_root / "300W", "train")
    labelled = LandmarkDataset(train, input_size=16, box_scale=1.25)
    item = labelled[0]
    assert set(item) == set(whole) and item["matrix"].dtype == whole["matrix"].dtype
    assert labelled_mask(torch.stack([item["points"], whole["points"]])).tolist() == [True, False]
    folder = pool.source_pool("folder", synthetic_root / "unlabelled")
    ds = UnlabelledDataset(folder.paths, folder.boxes, n_points=68, input_size=16, box_scale=1.25)
    invalid = {os.path.basename(folder.paths[i]) for i in range(len(ds)) if not ds[i]["valid"]}
    corrupt = json.load(open(synthetic_root / "manifest.json"))["datasets"]["unlabelled"]["corrupt"]
    assert invalid == {os.path.basename(corrupt[k]) for k in ("zero_byte", "truncated", "not_an_image")}


class _Constant(torch.nn.Module):
    def forward(self, x):
        return torch.arange(x.shape[0], dtype=torch.float32)[:, None, None, None].expand(-1, 2, 4, 4) + 0.5


def test_teacher_targets_and_checks():
    batch = {"image": torch.zeros(2, 3, 16, 16),
             "points": torch.tensor([[[3.5, 3.5], [7.5, 11.5]], [[np.nan, np.nan]] * 2], dtype=torch.float32)}
    teacher = teacher_targets(_Constant(), input_size=16, heatmap_size=4, sigma=1.0)
    torch.testing.assert_close(teacher(batch, torch.device("cpu")), _Constant()(batch["image"]))
    mixed = teacher_targets(_Constant(), input_size=16, heatmap_size=4, sigma=1.0, labelled="gt")
    mixed = mixed(batch, torch.device("cpu"))
    torch.testing.assert_close(mixed[0], render_heatmaps(torch.tensor([[0.5, 0.5], [1.5, 2.5]]), 4, 1.0))
    torch.testing.assert_close(mixed[1], torch.full((2, 4, 4), 1.5))
    cfg = {"model": {"arch": "resnet18"}, "data": {"input_size": 64, "fraction": 0.1}}
    check_teacher("t.pth", cfg, 68, arch="resnet18", input_size=64, n_points=68, labelled_keys=[], fraction=0.1)
    with pytest.raises(ValueError, match=r"arch resnet18 vs the student's resnet50.*fraction=0.1"):
        check_teacher("t.pth", cfg, 68, arch="resnet50", input_size=64, n_points=68, labelled_keys=[], fraction=0.02)
