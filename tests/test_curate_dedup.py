"""De-duplication and redundancy measurement (pretrain/curate/dedup.py)."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from pretrain.curate import dedup


def _smooth(seed, size=128):
    """A smooth random picture (upsampled 8x8 noise): thumbnails survive resizing and JPEG."""
    small = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def test_thumbnail_embedding_by_hand(tmp_path):
    quad = np.zeros((4, 4), np.uint8)
    quad[:2, 2:], quad[2:, :2], quad[2:, 2:] = 100, 100, 200
    Image.fromarray(quad).save(tmp_path / "q.png")
    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    emb, ok = dedup.thumbnail_embeddings([tmp_path / "q.png", tmp_path / "flat.png", tmp_path / "bad.png"], size=2)
    # box-average to [[0, 100], [100, 200]], minus the mean 100, unit length
    np.testing.assert_allclose(emb[0], [-0.5 ** 0.5, 0, 0, 0.5 ** 0.5], atol=1e-6)
    np.testing.assert_array_equal(emb[1], 0)  # a flat image matches nothing
    assert ok.tolist() == [True, True, False]


def test_redundancy_groups_and_neighbours():
    assert dedup.redundancy(np.array([1.0, 0.96, 0.5, 0.2]), (0.95, 0.99)) == {"0.95": 0.5, "0.99": 0.25}
    emb = np.array([[1, 0], [0.8, 0.6], [0, 1], [1, 0]], np.float32)  # cos(0,1)=0.8, (0,3)=1
    sims, ids = dedup.nearest_neighbours(emb, k=2)
    assert ids[0].tolist() == [3, 1] and ids[2].tolist() == [1, 0]
    np.testing.assert_allclose(sims[1], [0.8, 0.8], atol=1e-6)
    labels = dedup.duplicate_groups(["a", "b", "c", "d"], sims, ids, threshold=0.95)
    assert labels[0] == labels[3] and len({labels[0], labels[1], labels[2]}) == 3
    labels = dedup.duplicate_groups(["a", "b", "b", "d"], sims, ids, threshold=2.0)  # hashes alone
    assert labels[1] == labels[2] and len(set(labels.tolist())) == 3


def test_cli_exact_near_and_measure_only(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    a = _smooth(1)
    a.save(imgs / "a.png")
    (imgs / "a_copy.png").write_bytes((imgs / "a.png").read_bytes())
    a.resize((96, 96), Image.Resampling.BILINEAR).save(imgs / "a_small.png")
    buf = io.BytesIO()
    a.save(buf, "JPEG", quality=50)
    (imgs / "a_q50.jpg").write_bytes(buf.getvalue())
    for s in (2, 3):
        _smooth(s).save(imgs / f"other{s}.png")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    dedup.main(["--images", str(imgs), "--out", str(tmp_path / "d"), "--threshold", "0.95", "--workers", "1"])
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert (rep["listed"], rep["unreadable"], rep["n"]) == (7, 1, 6)
    assert (rep["exact_duplicates"], rep["near_duplicates"], rep["kept"]) == (1, 2, 3)
    assert rep["redundancy"]["0.95"] == pytest.approx(4 / 6)
    kept = [p.rsplit("/", 1)[-1] for p in (tmp_path / "d" / "kept.txt").read_text().split()]
    assert kept == ["a.png", "other2.png", "other3.png"]
    removed = [json.loads(line) for line in (tmp_path / "d" / "removed.jsonl").read_text().splitlines()]
    assert {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in removed} == \
        {"a_copy.png": "exact", "a_q50.jpg": "near", "a_small.png": "near"}
    # measuring only: the same redundancy, no lists; a list file as input works the same way
    (tmp_path / "list.txt").write_text("".join(f"imgs/{p.name}\n" for p in sorted(imgs.iterdir())))
    dedup.main(["--list", str(tmp_path / "list.txt"), "--out", str(tmp_path / "m"), "--measure-only"])
    rep2 = json.loads((tmp_path / "m" / "report.json").read_text())
    assert rep2["redundancy"] == rep["redundancy"] and not (tmp_path / "m" / "kept.txt").exists()


def test_backbone_embedding(tmp_path):
    for name, seed in (("a", 1), ("b", 2)):
        _smooth(seed, 256).save(tmp_path / f"{name}.png")
    paths = [tmp_path / "a.png", tmp_path / "a.png", tmp_path / "b.png"]
    emb, ok = dedup.backbone_embeddings(paths, arch="resnet18", init="scratch", batch_size=2, workers=1)
    assert emb.shape == (3, 512) and ok.all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)
