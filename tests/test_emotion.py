"""Emotion (paper App. D.1, Table 12): AffectNet list parsing and masking, loss, metrics, flip averaging, end to end."""
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from common.config import load_config
from common.engine import make_loader
from common.metrics import ccc, pcc
from emotion.affectnet import HEADER, AnnotationError, read_affectnet_list
from emotion.engine import evaluate
from emotion.model import EmotionLoss, batch_ccc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTS = ";".join(f"{v:.1f}" for v in np.arange(136))


def _csv(path, rows, header=",".join(HEADER)):
    with open(path, "w") as f:
        f.write("\n".join([header] + rows) + "\n")
    return str(path)


def _row(code, valence=0.5, arousal=-0.25, box="10,20,30,40", points=POINTS, name="1/a.jpg"):
    return f"{name},{box},{points},{code},{valence},{arousal}"


def test_affectnet_masking_rules(tmp_path):
    rows = [_row(1), _row(8, name="1/none.jpg"), _row(9, -2, -2, name="2/u.jpg"), _row(10, -2, -2, name="2/n.jpg"),
            _row(7, name="3/c.jpg"), _row(0, -2, 0.3, name="3/masked.jpg"), _row(2, box="5,5,0,10", name="4/e.jpg")]
    path = _csv(tmp_path / "training.csv", rows)
    t8 = read_affectnet_list(path, num_classes=8)
    assert t8["paths"] == ["1/a.jpg", "3/c.jpg", "3/masked.jpg"]
    assert t8["expression"].tolist() == [1, 7, 0]
    assert t8["va_valid"].tolist() == [True, True, False]
    assert t8["dropped"] == {"no_basic_emotion(8-10)": 3, "contempt(7-class)": 0, "empty_box": 1}
    np.testing.assert_array_equal(t8["boxes"][0], [10, 20, 40, 60])        # (x, y, w, h) -> (x1, y1, x2, y2)
    np.testing.assert_array_equal(t8["landmarks"][0, 1], [2.0, 3.0])
    assert t8["valence"][0] == 0.5 and t8["arousal"][0] == -0.25
    t7 = read_affectnet_list(path, num_classes=7)
    assert t7["paths"] == ["1/a.jpg", "3/masked.jpg"] and t7["dropped"]["contempt(7-class)"] == 1


@pytest.mark.parametrize("row, reason", [(_row("x"), "non-numeric"), (_row(11), "not a code 0-10"),
                                         (_row(1, valence=1.5), "valence 1.5"),
                                         (_row(1, points=";".join(["1"] * 134)), "134 numbers"),
                                         ("1/a.jpg,1,2,3", "expected 9 columns")])
def test_malformed_affectnet_row_names_file_and_line(tmp_path, row, reason):
    path = _csv(tmp_path / "validation.csv", [_row(1), row])
    with pytest.raises(AnnotationError, match=rf"validation.csv:3: .*{reason}"):
        read_affectnet_list(path)


def test_wrong_header_is_reported_on_line_1(tmp_path):
    path = _csv(tmp_path / "validation.csv", [_row(1)], header="path,x,y,w,h,lm,expr,v,a")
    with pytest.raises(AnnotationError, match="validation.csv:1: header"):
        read_affectnet_list(path)


def test_ccc_never_exceeds_abs_pcc_over_random_draws():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(2, 50))
        gt = rng.normal(rng.normal(), rng.uniform(0.1, 3), n)
        pred = rng.uniform(-2, 2) * gt + rng.normal(rng.normal(), rng.uniform(0.01, 3), n)
        c, r = ccc(pred, gt), pcc(pred, gt)
        assert c <= abs(r) + 1e-12
        assert float(batch_ccc(torch.tensor(pred), torch.tensor(gt), eps=0.0)) == pytest.approx(c, rel=1e-9, abs=1e-12)


def test_loss_matches_hand_computation():
    """Valence rows 0-1 (row 2 masked): pred (0.5, -0.5) vs gt (1, 0): RMSE 0.5, CCC 0.25*2 / 0.75 = 2/3;
    arousal exact (RMSE 0, CCC 1); CE of zero logits over 3 classes = log 3."""
    outputs = {"valence": torch.tensor([0.5, -0.5, 0.0]), "arousal": torch.tensor([0.1, -0.3, 0.9]),
               "logits": torch.zeros(3, 3)}
    args = (torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 0.2]), torch.tensor([0.1, -0.3, -0.7]),
            torch.tensor([True, True, False]))
    loss, parts = EmotionLoss()(outputs, *args)
    assert float(parts["rmse_valence"]) == pytest.approx(0.5) and float(parts["ccc_valence"]) == pytest.approx(2 / 3)
    assert float(loss) == pytest.approx(math.log(3) + 0.5 + 1 / 3, abs=1e-5)
    weighted, _ = EmotionLoss(ce_weight=2.0, rmse_weight=0.0, ccc_weight=3.0)(outputs, *args)
    assert float(weighted) == pytest.approx(2 * math.log(3) + 3 * (1 / 3), abs=1e-5)
    single, parts = EmotionLoss()(outputs, args[0], args[1], args[2], torch.tensor([True, False, False]))
    assert float(single) == pytest.approx(math.log(3)) and float(parts["ccc_valence"]) == 0.0


class _MirrorStub(nn.Module):
    """valence = mean(left half) - mean(right half): its mirror gives the opposite sign."""

    def forward(self, x):
        half = x.shape[-1] // 2
        v = x[:, 0, :, :half].mean((1, 2)) - x[:, 0, :, half:].mean((1, 2))
        return {"valence": torch.tanh(v), "arousal": torch.tanh(x.mean((1, 2, 3))),
                "logits": torch.stack([v, -v], 1)}


def test_flip_averages_valence_arousal_not_the_class():
    torch.manual_seed(0)
    data = [{"image": torch.randn(3, 8, 8), "index": i} for i in range(6)]
    table = {"expression": np.array([0, 1, 0, 1, 0, 1]), "va_valid": np.ones(6, bool),
             "valence": np.linspace(-0.5, 0.5, 6).astype(np.float32), "arousal": np.zeros(6, np.float32),
             "paths": [str(i) for i in range(6)]}
    loader = make_loader(data, batch_size=4, train=False, workers=0, seed=0)
    plain, p = evaluate(_MirrorStub(), loader, table, device=torch.device("cpu"), flip_va=False)
    flipped, q = evaluate(_MirrorStub(), loader, table, device=torch.device("cpu"), flip_va=True)
    np.testing.assert_allclose(q["valence"], 0.0, atol=1e-6)             # image and mirror cancel
    np.testing.assert_allclose(q["arousal"], p["arousal"], atol=1e-6)    # mirror-invariant output unchanged
    np.testing.assert_array_equal(q["logits"], p["logits"])
    assert flipped["accuracy"] == plain["accuracy"] and flipped["images"] == 6


def test_dataset_check_counts_and_draws_the_tiny_copy(tmp_path, synthetic_root):
    """``emotion.data --check`` on the tiny preset: codes 8-10 dropped, every image readable, a figure."""
    check = subprocess.run([sys.executable, "-m", "emotion.data", "--check", "--dataset", "affectnet", "--root",
                            str(synthetic_root / "AffectNet"), "--out", str(tmp_path / "check"), "--input-size", "48"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(check.stdout.strip().splitlines()[-1])
    assert summary == {"train": {"count": 9, "unreadable": 0}, "val": {"count": 5, "unreadable": 0}}
    assert os.path.isfile(tmp_path / "check" / "check_affectnet_val.png")


def test_synthetic_finetune_generalises_arousal_and_valence(tmp_path, small_preset):
    """Issue 8: a short fine-tune reaches a valence CCC clearly above 0 on the held-out validation list;
    eval.py reproduces the run's test metrics. The small preset: 1,597 training and 197 validation
    faces (128-px renders, 64-px crops); the synthetic config's 5 epochs of batch 16 at lr 5e-4 (~500
    steps, ~2 min on one core). Measured here: valence CCC 0.43, arousal 0.74, accuracy 0.28. On a
    400-face validation copy with training seeds 0 / 1 / 2: valence 0.41 / 0.43 / 0.15, arousal 0.75 /
    0.75 / 0.74. Valence rests on telling happy faces (large AU6 + AU12) from the rest; the five
    negative classes (small brow and lip-corner motions) stay near 0 accuracy at this size. The same
    ~500 steps on 400 training faces gave valence 0.22 (lr 1e-3); at lr 1e-3, seeds 0-2 gave 0.04-0.55."""
    from emotion import eval as emo_eval, train as emo_train
    data = small_preset("affectnet")
    assert json.load(open(data / "manifest.json"))["datasets"]["affectnet"]["render_size"] == 128  # own size
    root = str(data / "AffectNet")
    cfg = load_config(os.path.join(ROOT, "emotion/configs/synthetic.yaml"),
                      [f"data.root={root}", f"out={tmp_path / 'run'}"])
    metrics = emo_train.main(cfg)
    assert metrics["images"] == 197 and metrics["train_images"] == 1597 and metrics["flip_va"] is True
    assert metrics["arousal"]["ccc"] > 0.5 and metrics["valence"]["ccc"] > 0.1, metrics  # measured 0.74 / 0.43
    again = emo_eval.main(cfg, str(tmp_path / "run" / "last.pth"), out=str(tmp_path / "ev"))  # eval.py reproduces
    assert again["valence"] == metrics["valence"] and again["accuracy"] == metrics["accuracy"]


def test_missing_affectnet_images_are_named(tmp_path, capsys):
    """Images listed in training.csv but absent are named in the log (first 10 + count)."""
    from PIL import Image
    from emotion.affectnet import IMAGE_FOLDER, LIST_FOLDER
    from emotion.data import load_split
    names = [f"{1 + i % 2}/img{i:02d}.jpg" for i in range(13)]
    (tmp_path / LIST_FOLDER).mkdir()
    _csv(tmp_path / LIST_FOLDER / "training.csv", [_row(1, name=n) for n in names])
    present = tmp_path / IMAGE_FOLDER / names[0]
    present.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(present)
    table = load_split(str(tmp_path), "train")
    assert len(table["paths"]) == 13                                     # still listed: skipped as unreadable
    out = capsys.readouterr().out
    assert "training.csv: 12 listed images are missing" in out and "(first 10 of 12)" in out
    assert [os.path.join(str(tmp_path), IMAGE_FOLDER, n) in out for n in names] == [False] + [True] * 10 + [False] * 2


def _write_affectnet(out, layout, train=12, val=8):
    """The synthetic AffectNet writer, run in this process for one ``layout`` (csv / npy / both)."""
    from common.synthetic.writers import affectnet as writer
    from common.synthetic.writers.sampling import context
    cfg = {"train": train, "val": val, "layout": layout}
    jobs = writer.plan_affectnet(cfg, 0)
    ctx = context(0, 96)
    writer.finish_affectnet(str(out), cfg, jobs, [writer.make_affectnet(ctx, str(out), cfg, j) for j in jobs], 0)
    return out / writer.FOLDER


def test_npy_release_gives_the_csv_labels_of_the_same_faces(tmp_path):
    """The per-image .npy release of the synthetic faces (written with the CSV lists, ``layout=both``) parses to
    the same classes, valence, arousal, V/A masks and dropped-row counts (codes 8-10, Contempt for 7 classes);
    its landmarks are the CSV ones moved into the square crop; with the crop as box (box_scale 1) the face
    crops agree with the CSV box crops up to JPEG noise; a root holding both releases must be told which."""
    from emotion.data import build_dataset, load_split
    root = _write_affectnet(tmp_path, "both")
    for split, num_classes in (("train", 8), ("train", 7), ("val", 8)):
        csv_table = load_split(str(root), split, num_classes, layout="csv")
        npy_table = load_split(str(root), split, num_classes, layout="npy")
        for field in ("expression", "valence", "arousal", "va_valid"):
            np.testing.assert_array_equal(npy_table[field], csv_table[field], err_msg=field)
        assert npy_table["dropped"] == csv_table["dropped"] and npy_table["dropped"]["no_basic_emotion(8-10)"] == 3
        assert np.isnan(npy_table["boxes"]).all() and npy_table["keys"][0] == "0.jpg"
        shift = csv_table["landmarks"] - npy_table["landmarks"]                  # one translation per face
        np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=0.011)
        box = csv_table["boxes"]
        corner = (box[:, :2] + box[:, 2:]) / 2 - np.max(box[:, 2:] - box[:, :2], axis=1, keepdims=True) / 2
        np.testing.assert_allclose(shift[:, 0], corner, atol=0.52)              # the square's corner
    crops = [build_dataset(t, train=False, input_size=48, box_scale=1.0, augment={}) for t in (csv_table, npy_table)]
    diffs = [float((crops[0][i]["image"] - crops[1][i]["image"]).abs().mean()) for i in range(len(crops[0]))]
    assert max(diffs) < 0.15, diffs                                              # ~0.05-0.1: JPEG and half a pixel
    assert all(crops[1][i]["expression"] == crops[0][i]["expression"] for i in range(len(crops[0])))
    with pytest.raises(ValueError, match="holds both AffectNet releases"):
        load_split(str(root), "val")
    npy_only = _write_affectnet(tmp_path / "npy", "npy", train=4, val=4)        # detected without being told
    assert not os.path.exists(npy_only / "Manually_Annotated_file_lists")
    assert len(load_split(str(npy_only), "val")["keys"]) == 1                 # 4 rows, the last 3 are codes 8-10


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npy_split(tmp_path, files):
    """A one-id ``val_set`` of the .npy release; ``files`` maps a field to an array, or bytes written as they are."""
    from emotion.affectnet import NPY_ANNOTATION_FOLDER
    folder = tmp_path / "val_set" / NPY_ANNOTATION_FOLDER
    folder.mkdir(parents=True)
    for name, value in {"exp": np.array("1"), "val": np.array("0.25"), "aro": np.array("-0.5"), **files}.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            (folder / f"7_{name}.npy").write_bytes(value)
        else:
            np.save(folder / f"7_{name}.npy", value, allow_pickle=value.dtype == object)
    return str(tmp_path / "val_set")


@pytest.mark.parametrize("files, bad, reason", [
    ({"exp": b"1\n"}, "7_exp.npy", "not a readable .npy"),
    ({"exp": np.array({"code": 1}, dtype=object)}, "7_exp.npy", "not a readable .npy"),
    ({"exp": np.array("x")}, "7_exp.npy", "not a number"),
    ({"exp": np.array("11")}, "7_exp.npy", "not a code 0-10"),
    ({"val": np.array("1.5")}, "7_val.npy", "valence 1.5"),
    ({"aro": np.array(["0.1", "0.2"])}, "7_aro.npy", "expected 1 number"),
    ({"lnd": np.zeros(134)}, "7_lnd.npy", "expected 136"),
    ({"lnd": _npy_bytes(np.zeros(136))[:-8]}, "7_lnd.npy", "cut short"),
    ({"aro": None}, "7_aro.npy", "missing"),
])
def test_malformed_affectnet_npy_names_the_file(tmp_path, files, bad, reason):
    from emotion.affectnet import read_affectnet_npy
    with pytest.raises(AnnotationError, match=rf"{bad}: .*{reason}"):
        read_affectnet_npy(_npy_split(tmp_path, files))


def test_affectnet_npy_reads_numeric_arrays_and_masks_the_sentinel(tmp_path):
    """Numbers stored as numbers (not strings) read the same; valence -2 masks V/A but keeps the class."""
    from emotion.affectnet import read_affectnet_npy
    table = read_affectnet_npy(_npy_split(tmp_path, {"exp": np.array(3), "val": np.array(-2.0),
                                                     "lnd": np.arange(136.0)}))
    assert table["paths"] == ["7.jpg"] and table["expression"].tolist() == [3] and table["va_valid"].tolist() == [False]
    np.testing.assert_array_equal(table["landmarks"][0, 1], [2.0, 3.0])
