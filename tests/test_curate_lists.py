"""Pre-training list builders (pretrain/curate/lists.py) on miniature copies of the real layouts."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.subsample import load_keys, subset_keys
from pretrain.curate import lists


def _img(path, size=(64, 48), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _vggface2(root, with_meta=True):
    train = ["n000002/0001_01.jpg", "n000002/0002_01.jpg", "n000003/0001_01.jpg"]
    test = ["n000001/0001_01.jpg", "n000001/0003_02.jpg"]
    for part, rel in (("train", train), ("test", test)):
        for r in rel:
            _img(root / part / r)
        if with_meta:
            (root / "meta").mkdir(parents=True, exist_ok=True)
            (root / "meta" / f"{part}_list.txt").write_text("\n".join(rel) + "\n")
    return sorted([f"train/{r}" for r in train] + [f"test/{r}" for r in test])


def _widerface(root):
    """Two images: faces valid+large, invalid, tiny; and one image without faces (dummy line)."""
    img = np.zeros((300, 400, 3), np.uint8)
    img[50:150, 100:200] = 255  # the "face": box x=100 y=50 w=100 h=100
    (root / "WIDER_train" / "images" / "0--Parade").mkdir(parents=True)
    Image.fromarray(img).save(root / "WIDER_train" / "images" / "0--Parade" / "0_Parade_1.jpg")
    _img(root / "WIDER_train" / "images" / "1--Handshaking" / "1_Hand_2.jpg")
    (root / "wider_face_split").mkdir()
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(
        "0--Parade/0_Parade_1.jpg\n3\n"
        "100 50 100 100 0 0 0 0 0 0 \n"
        "10 10 60 60 0 0 0 1 0 0 \n"  # invalid
        "300 200 12 15 2 0 0 0 1 0 \n"  # too small
        "1--Handshaking/1_Hand_2.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")


def test_widerface_parse_and_190px_crop(tmp_path):
    _widerface(tmp_path / "wf")
    parsed = lists.parse_widerface(tmp_path / "wf" / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    assert [n for n, _ in parsed] == ["0--Parade/0_Parade_1.jpg", "1--Handshaking/1_Hand_2.jpg"]
    assert parsed[0][1].shape == (3, 10) and parsed[0][1][1, 7] == 1 and parsed[1][1].shape == (0, 10)
    paths = lists.widerface_crops(tmp_path / "wf", tmp_path / "crops")
    assert [Path(p).relative_to(tmp_path / "crops").as_posix() for p in paths] == ["0--Parade/0_Parade_1_0.jpg"]
    crop = np.asarray(Image.open(paths[0]).convert("L")).astype(float) / 255
    assert crop.shape == (256, 256)
    white_rows = np.flatnonzero(crop[:, 128] > 0.5)
    white_cols = np.flatnonzero(crop[128] > 0.5)
    assert abs(len(white_rows) - 190) <= 2 and abs(len(white_cols) - 190) <= 2  # the box spans 190 px
    assert abs(white_rows.mean() - 127.5) < 1.5 and abs(white_cols.mean() - 127.5) < 1.5  # centred
    bad = tmp_path / "bad.txt"
    bad.write_text("a/b.jpg\n1\n1 2 3 4 5 6 7 8 9\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: a face line has 10 numbers"):
        lists.parse_widerface(bad)
    bad.write_text("a/b.jpg\nthree\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        lists.parse_widerface(bad)


def test_vggface2_full_and_1m_subset(tmp_path):
    keys = _vggface2(tmp_path / "vgg")
    assert lists.vggface2_keys(tmp_path / "vgg") == keys
    walked = _vggface2(tmp_path / "vgg_nometa", with_meta=False)
    assert lists.vggface2_keys(tmp_path / "vgg_nometa") == walked == keys
    assert lists.vggface2_keys(tmp_path / "vgg", "test") == keys[:2]
    out = tmp_path / "full.txt"
    lists.main(["vggface2", "--root", str(tmp_path / "vgg"), "--out", str(out)])
    assert load_keys(out) == [str((tmp_path / "vgg" / k).resolve()) for k in keys]
    sub = tmp_path / "small.txt"
    lists.main(["vggface2-1m", "--root", str(tmp_path / "vgg"), "--size", "3", "--seed", "5", "--out", str(sub)])
    expected = subset_keys(keys, 3 / 5, 5)
    assert len(expected) == 3 and load_keys(f"{sub}.keys") == expected
    assert load_keys(sub) == [str((tmp_path / "vgg" / k).resolve()) for k in expected]
    first = sub.read_bytes()
    lists.main(["vggface2-1m", "--root", str(tmp_path / "vgg"), "--size", "3", "--seed", "5", "--out", str(sub)])
    assert sub.read_bytes() == first  # the same seed gives the same subset


def test_large_scale_face_and_errors(tmp_path, capsys):
    _vggface2(tmp_path / "vgg")
    for d in ("AFW", "IBUG_Flip"):
        _img(tmp_path / "300wlp" / d / f"{d}_1.jpg")
    _img(tmp_path / "300wlp" / "landmarks" / "AFW" / "x.jpg")  # not an image folder of 300W-LP
    _img(tmp_path / "imdb" / "a" / "1.jpg")
    aff = tmp_path / "affectnet"
    _img(aff / "Manually_Annotated_Images" / "1" / "a.jpg")
    (aff / "Manually_Annotated_file_lists").mkdir(parents=True)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    (aff / "Manually_Annotated_file_lists" / "training.csv").write_text(
        header + '1/a.jpg,1,2,30,30,"1;2",1,0.5,0.1\n2/missing.jpg,0,0,0,0,"",10,-2,-2\n')
    _widerface(tmp_path / "wf")
    out = tmp_path / "lsf.txt"
    lists.main(["large-scale-face", "--vggface2", str(tmp_path / "vgg"), "--300w-lp", str(tmp_path / "300wlp"),
                "--imdb-face", str(tmp_path / "imdb"), "--affectnet", str(aff), "--widerface", str(tmp_path / "wf"),
                "--widerface-crops", str(tmp_path / "wfc"), "--out", str(out), "--exclude-300wlp", "IBUG_Flip"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sources"] == {"vggface2": 5, "300w-lp": 1, "imdb-face": 1, "affectnet": 1, "widerface": 1}
    assert len(load_keys(out)) == 9 and all(Path(p).is_file() for p in load_keys(out))
    (aff / "Manually_Annotated_file_lists" / "training.csv").write_text(header + "1/a.jpg,1,2\n")
    with pytest.raises(ValueError, match=r"training.csv:2: malformed row"):
        lists.affectnet_images(aff)
    with pytest.raises(SystemExit, match="VGGFace2 root: folder not found"):
        lists.main(["vggface2", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "x.txt")])
