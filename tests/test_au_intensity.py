"""AU intensity (paper §5.3): DISFA / BP4D readers and masking, folds, ICC / MAE, pooling, face boxes, training
end to end."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from au_intensity import labels as L
from au_intensity.data import (LAYOUT_KEYS, boxes_for, check_boxes, index_split, load_split, read_boxes,
                               split_dataset)
from au_intensity.engine import au_metrics, pool_runs, save_predictions
from common.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _image(path, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


# ---------------------------------------------------------------- label files

def _disfa_subject(root, subject, frames=4, frame_images=True):
    values = np.arange(frames)[:, None] + np.arange(len(L.DISFA_AUS))[None, :]
    values = values % 6                                                   # frames x 12, codes 0-5
    for j, au in enumerate(L.DISFA_AUS):
        _write(os.path.join(root, "ActionUnit_Labels", subject, f"{subject}_au{au}.txt"),
               [f"{t + 1},{values[t, j]}" for t in range(frames)])
    if frame_images:
        for t in range(frames):
            _image(os.path.join(root, "Frames_LeftCamera", subject, f"{t + 1}.jpg"))
    return values


def test_disfa_reader_values_and_frames(tmp_path):
    values = _disfa_subject(str(tmp_path), "SN001", frames=5)
    frames, got = L.read_disfa_subject(str(tmp_path), "SN001")
    assert frames.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(got, values.astype(np.float32))


@pytest.mark.parametrize("bad, reason", [("3,x", "two integers"), ("3,7", "code"), ("3", "two"),
                                         ("3,2,1", "two comma-separated"), ("3,2.5", "integers")])
def test_malformed_label_line_names_file_and_line(tmp_path, bad, reason):
    path = tmp_path / "SN001_au1.txt"
    _write(str(path), ["1,0", "2,1", bad, "4,0"])
    with pytest.raises(L.LabelFormatError, match=rf"{path.name}:3: .*{reason}"):
        L.read_intensity_file(str(path), range(6))


def test_repeated_frame_is_an_error(tmp_path):
    path = tmp_path / "a.csv"
    _write(str(path), ["1,0", "2,1", "2,1"])
    with pytest.raises(L.LabelFormatError, match=r"a.csv:3: frame 2 appears twice"):
        L.read_intensity_file(str(path), range(6))


def test_disfa_au_files_must_agree(tmp_path):
    _disfa_subject(str(tmp_path), "SN002", frames=4)
    _write(str(tmp_path / "ActionUnit_Labels" / "SN002" / "SN002_au9.txt"), ["1,0", "2,0", "3,0"])
    with pytest.raises(L.LabelFormatError, match="SN002_au9.txt"):
        L.read_disfa_subject(str(tmp_path), "SN002")


def test_bp4d_code9_and_missing_frames_drop_the_whole_frame(tmp_path):
    """Rule: a frame is used only if every AU file lists it with a code 0-5 (FERA2015)."""
    label_dir = tmp_path / "AU Intensity Codes3.0"
    frames = [100, 101, 102, 103, 104]
    codes = {6: [0, 1, 9, 3, 4], 10: [1, 2, 3, 4, 5], 12: [2, 3, 4, 5, 0], 14: [0, 0, 0, 0, 0], 17: [5, 4, 3, 2, 1]}
    for au, c in codes.items():
        rows = [f"{f},{v}" for f, v in zip(frames, c)]
        if au == 14:
            rows = rows[:-1]                                              # frame 104 not coded for AU14
        _write(str(label_dir / f"AU{au:02d}" / f"F001_T1_AU{au:02d}.csv"), rows)
    got_frames, got, dropped = L.read_bp4d_sequence(str(label_dir), "F001_T1")
    assert got_frames.tolist() == [100, 101, 103]
    assert dropped == 2
    expected = np.array([[codes[au][i] for au in L.BP4D_AUS] for i in (0, 1, 3)], np.float32)
    np.testing.assert_array_equal(got, expected)


def test_bp4d_index_counts_and_keys(tmp_path):
    for seq, first in (("F001_T1", 10), ("F001_T2", 20), ("F002_T1", 30)):
        for au in L.BP4D_AUS:
            _write(str(tmp_path / "AU Intensity Codes3.0" / f"AU{au:02d}" / f"{seq}_AU{au:02d}.csv"),
                   [f"{first},1", f"{first + 1},9" if au == 10 else f"{first + 1},2", f"{first + 2},3"])
        subject, task = seq.split("_")
        for f in (first, first + 1):                                      # the third frame has no image
            _image(str(tmp_path / "BP4D-training" / subject / task / f"{f}.jpg"))
    index = index_split("bp4d", str(tmp_path), ["F001"])                  # a training subject only
    assert index.keys == ["F001/T1/10", "F001/T2/20"]
    assert index.counts == {"labelled": 4, "unlabelled_code9": 2, "missing_image": 2, "frames": 2}
    assert load_split("bp4d", str(tmp_path), "test").keys == ["F002/T1/30"]  # devel subjects


def test_missing_subject_folder_is_a_clear_error(tmp_path):
    _disfa_subject(str(tmp_path), "SN001", frame_images=False)
    with pytest.raises(FileNotFoundError, match="frames folder not found"):
        index_split("disfa", str(tmp_path), ["SN001"])


def test_box_file_prefix_lookup(tmp_path):
    path = tmp_path / "boxes.csv"
    _write(str(path), ["SN001,0,0,10,10", "SN001/3,1,2,3,4"])
    boxes = boxes_for(["SN001/1", "SN001/3", "SN002/1"], read_boxes(str(path)))
    np.testing.assert_array_equal(boxes[:2], [[0, 0, 10, 10], [1, 2, 3, 4]])
    assert np.isnan(boxes[2]).all()
    _write(str(path), ["SN001,0,0,10"])
    with pytest.raises(L.LabelFormatError, match="boxes.csv:1"):
        read_boxes(str(path))


def test_bp4d_zero_padded_frame_names_are_found_by_number(tmp_path):
    """BP4D pads frame names to a width fixed per sequence folder (machanic/AU_R-CNN AU_intensity_index_file_gen.py
    zfills to the folder's first file name): the default "{frame}.jpg" finds 087.jpg and 0612.jpg by value."""
    for seq, frames, width in (("F001_T1", (87, 88, 1003), 3), ("F001_T2", (612, 613), 4)):
        for au in L.BP4D_AUS:
            _write(str(tmp_path / "AU Intensity Codes3.0" / f"AU{au:02d}" / f"{seq}_AU{au:02d}.csv"),
                   [f"{f},2" for f in frames])
        for f in frames:
            _image(str(tmp_path / "BP4D-training" / seq.replace("_", "/") / f"{f:0{width}d}.jpg"))
    index = index_split("bp4d", str(tmp_path), ["F001"])
    assert index.keys == ["F001/T1/87", "F001/T1/88", "F001/T1/1003", "F001/T2/612", "F001/T2/613"]
    assert [os.path.basename(p) for p in index.paths] == ["087.jpg", "088.jpg", "1003.jpg", "0612.jpg", "0613.jpg"]
    assert index.counts["missing_image"] == 0
    assert index_split("bp4d", str(tmp_path), ["F001"], frame_name="{frame:04d}.jpg").counts["missing_image"] == 2
    _image(str(tmp_path / "BP4D-training" / "F001" / "T2" / "612.jpg"))
    with pytest.raises(ValueError, match="T2: frame 612 has several files: 0612.jpg, 612.jpg"):
        index_split("bp4d", str(tmp_path), ["F001"])


def test_box_smoothing_and_fallbacks_by_hand():
    """Median over the window drops a one-frame outlier; gaps are interpolated inside a video, nearest at its
    ends; a video without detections gets the whole frame; rows come back grouped by video, frames in order."""
    from au_intensity.boxes import face_boxes, smooth_and_fill
    a, nan = [10.0, 20.0, 50.0, 70.0], [np.nan] * 4
    raw = np.array([nan, a, [90.0, 90, 130, 130], a, nan, a, a, a, nan])
    filled, source = smooth_and_fill(np.arange(1, 10), raw, (5, 5), (0, 0, 1, 1))
    np.testing.assert_allclose(filled, np.tile(a, (9, 1)))
    assert source.tolist() == [2, 0, 0, 0, 1, 0, 0, 0, 2]
    # a head moving 10 px a frame, its box side jittering 40 +- 4: a 1-frame centre window follows the head,
    # a 5-frame size window keeps the side at 40 (one window of 7 would have dragged the centre)
    cx, side = 100.0 + 10 * np.arange(7), 40.0 + np.array([0, 4, -4, 0, 4, -4, 0])
    moving = np.stack([cx - side / 2, 50 - side / 2, cx + side / 2, 50 + side / 2], axis=1)
    filled, _ = smooth_and_fill(np.arange(7), moving, (1, 5), (0, 0, 1, 1))
    np.testing.assert_allclose(filled, np.stack([cx - 20, np.full(7, 30), cx + 20, np.full(7, 70)], axis=1))
    keys = ["F001/T1/30", "F001/T1/10", "F002/T1/5", "F001/T1/20", "M001/T1/1"]
    raw = np.array([[20.0, 0, 30, 10], [0.0, 0, 10, 10], nan, nan, nan])
    sizes = np.array([[48, 64]] * 4 + [[np.nan, np.nan]], dtype=float)        # M001: unreadable
    rows, boxes, codes = face_boxes(keys, raw, sizes, windows=(1, 1))
    assert rows.tolist() == [1, 3, 0, 2] and codes.tolist() == [0, 1, 0, 3]
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [-0.5, -0.5, 63.5, 47.5]])


def _iou(a, b):
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    return inter / ((a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter)


def test_boxes_command_finds_the_faces_of_synthetic_bp4d_frames(tmp_path, synthetic_root):
    """``python -m au_intensity.boxes`` on the tiny BP4D copy, whose 192x144 frames hold the face in a part of
    the picture: a box for every labelled frame, a count per fallback (the middle one of three frames blanked:
    interpolated from its neighbours), the videos without any face detected again at lower thresholds, IoU > 0.5
    with the writer's true face boxes on >= 95 % of the frames (measured: 62 detected, 2 of them on the retry,
    1 interpolated, 1 nearest, no whole frame; IoU > 0.5 on 64 of 64, median 0.81, the interpolated one 0.91;
    without the retry 3 frames were whole frames), and the loader with the config's default data.boxes uses
    every box. Held-out ICC by crop: the next test, and the fine-tunes of au_intensity/README.md ("Held-out ICC
    by crop")."""
    from au_intensity.boxes import main as boxes_main
    from test_curate_detector import mtcnn_weights
    root = tmp_path / "BP4D"
    shutil.copytree(synthetic_root / "BP4D", root)
    index = index_split("bp4d", str(root), L.BP4D_TRAIN + L.BP4D_DEVEL)
    videos = [k.rsplit("/", 1)[0] for k in index.keys]
    blank = next(i + 1 for i in range(len(videos) - 2) if videos[i] == videos[i + 2])   # middle of 3 frames
    Image.fromarray(np.full((144, 192, 3), 90, np.uint8)).save(index.paths[blank])
    report = boxes_main(["--root", str(root), "--dataset", "bp4d", "--workers", "0", "--weights", str(mtcnn_weights())])
    counts = report["counts"]
    boxes, truth = read_boxes(str(root / "face_boxes.csv")), read_boxes(str(root / "synthetic_face_boxes.csv"))
    assert sorted(boxes) == sorted(index.keys) and counts["frames"] == counts["written"] == len(index.keys)
    assert sum(counts[k] for k in ("detected", "interpolated", "nearest", "whole_frame")) == len(index.keys)
    assert counts["interpolated"] >= 1                                    # the blank frame
    assert counts["found_on_retry"] >= 1 and counts["retried"] >= counts["found_on_retry"]
    assert json.loads((root / "face_boxes.json").read_text())["counts"] == counts
    iou = _iou(np.array([boxes[k] for k in index.keys]), np.array([truth[k] for k in index.keys]))
    assert (iou > 0.5).mean() >= 0.95 and iou[blank] > 0.5, (np.round(iou, 2), counts)
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/bp4d.yaml"), [f"data.root={root}"])
    train = split_dataset("train", **{k: cfg.data[k] for k in LAYOUT_KEYS})
    assert train.index.counts["no_box"] == 0 and np.isfinite(train.boxes).all() and len(train) > 0


def _pixel_ridge_icc(root, boxes, box_scale):
    """Held-out ICC (BP4D devel) of a ridge from 32 px grey crops to the AU intensities, its penalty chosen on
    held-out training subjects (scripts/evaluate_linear.ridge_fit_predict, the linear protocol's ridge)."""
    from scripts.evaluate_linear import ridge_fit_predict
    data = {}
    for split in ("train", "devel"):
        frames = split_dataset(split, dataset="bp4d", root=root, fold=0, fold_scheme="frl", frames_dir="",
                               frame_name="", boxes=boxes, input_size=32, box_scale=box_scale)
        pixels = torch.stack([frames[i]["image"] for i in range(len(frames))]).mean(1).flatten(1).numpy()
        data[split] = pixels, frames.index.labels, [k.split("/")[0] for k in frames.index.keys]
    (x, y, subjects), (x_test, y_test, _), aus = data["train"], data["devel"], L.BP4D_AUS
    pred, _ = ridge_fit_predict(x, y, x_test, groups=subjects, metric="icc_mean", seed=0,
                                score=lambda p, rows: au_metrics(p, y[rows], aus)["icc_mean"])
    return au_metrics(pred, y_test, aus)["icc_mean"]


def test_detected_face_crops_beat_whole_frames_on_held_out_subjects(small_preset):
    """Acceptance (issue 19): the boxes command's crops carry the AU signal that whole frames lose, on held-out
    subjects. The small BP4D copy (seed 0: 263 training, 251 devel frames, the face ~0.37 of a 128x96 frame,
    moving). A fine-tune per crop takes ~2 CPU-minutes (au_intensity/README.md, "Held-out ICC by crop"), so CI
    fits a ridge on the crops' pixels instead. Measured (seeds 0 / 1 / 2 of the preset): detected crops at
    box_scale 1.18 (the true box's 1.35 framing) .185 / .262 / .128, whole frames -.023 / .000 / .077, true boxes
    at 1.35 .250 / .170 / .240."""
    from au_intensity.boxes import main as boxes_main
    from test_curate_detector import mtcnn_weights
    root = str(small_preset("bp4d") / "BP4D")
    boxes_main(["--root", root, "--dataset", "bp4d", "--workers", "0", "--weights", str(mtcnn_weights())])
    detected, whole = _pixel_ridge_icc(root, "face_boxes.csv", 1.18), _pixel_ridge_icc(root, "none", 1.0)
    assert detected > 0.1 and detected > whole + 0.1, (detected, whole)


def test_boxes_retry_only_the_videos_without_any_detection():
    """The second, lower-threshold pass takes the readable frames of videos where the first found no face."""
    import argparse
    from au_intensity.boxes import thresholds_arg, undetected_videos
    keys = ["F001/T1/1", "F001/T1/2", "F002/T1/1", "F002/T1/2", "F002/T1/3", "M001/T1/1"]
    nan, box = [np.nan] * 4, [0.0, 0.0, 10.0, 10.0]
    raw = np.array([nan, box, nan, nan, nan, nan])
    sizes = np.array([[48, 64]] * 4 + [[np.nan, np.nan], [48, 64]], dtype=float)   # F002/T1/3 unreadable
    assert undetected_videos(keys, raw, sizes).tolist() == [2, 3, 5]
    assert thresholds_arg("0.4,0.5,0.5") == (0.4, 0.5, 0.5) and thresholds_arg("none") is None
    for bad in ("0.4,0.5", "a,b,c"):
        with pytest.raises(argparse.ArgumentTypeError, match="three comma-separated numbers"):
            thresholds_arg(bad)


def test_boxes_centre_on_the_five_points_keeps_the_size():
    from au_intensity.boxes import centre_on_points
    boxes = np.array([[0.0, 0.0, 10.0, 20.0]])
    points = np.array([[[5.0, 6.0], [9.0, 6.0], [7.0, 9.0], [5.0, 12.0], [9.0, 12.0]]])   # mean (7, 9)
    np.testing.assert_allclose(centre_on_points(boxes, points), [[2.0, -1.0, 12.0, 19.0]])


def test_missing_box_file_fails_before_the_run_folder_and_none_warns(tmp_path, synthetic_root, capsys):
    """The configs crop the face boxes by default: without the box file training stops before writing anything,
    naming the file and the command that writes it; whole frames need data.boxes=none and print a warning."""
    from au_intensity.train import main
    root = synthetic_root / "BP4D"
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/bp4d.yaml"), [f"data.root={root}",
                                                                             f"out={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError, match=rf"{root / 'face_boxes.csv'} .*"
                                                rf"python -m au_intensity.boxes --root {root} --dataset bp4d"):
        main(cfg)
    assert not (tmp_path / "run").exists()
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/bp4d.yaml"), [f"data.root={root}", "data.boxes=none"])
    assert check_boxes(cfg.data) == ""
    assert "WARNING: data.boxes='none': bp4d frames are letterboxed whole" in capsys.readouterr().out


# ---------------------------------------------------------------- protocol lists

@pytest.mark.parametrize("scheme", ["frl", "jaa"])
def test_disfa_folds_are_subject_independent(scheme):
    folds = L.DISFA_FOLDS[scheme]
    tests = [set(f["test"]) for f in folds]
    assert all(len(t) == 9 for t in tests) and set.union(*tests) == set(L.DISFA_SUBJECTS)
    assert sum(len(t) for t in tests) == 27
    for f in folds:
        rest = set(f["train"]) | set(f["val"])
        assert not rest & set(f["test"]) and rest | set(f["test"]) == set(L.DISFA_SUBJECTS)
        assert len(f["train"]) == (12 if scheme == "frl" else 18)


def test_bp4d_split_sizes():
    assert len(L.BP4D_TRAIN) == 21 and len(L.BP4D_DEVEL) == 20 and not set(L.BP4D_TRAIN) & set(L.BP4D_DEVEL)


# ---------------------------------------------------------------- metrics

def test_icc_perfect_constant_and_hand_computed():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (50, 3)).astype(float)
    assert au_metrics(gt, gt, (1, 2, 4))["icc_mean"] == pytest.approx(1.0)
    const = au_metrics(np.full_like(gt, 2.0), gt, (1, 2, 4))
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in const["icc"].values())
    # gt (0,1,2,3), pred (1,1,3,3): BMS = 2*4.25/3, EMS = 0.5/3, ICC = (BMS-EMS)/(BMS+EMS) = 8/9
    m = au_metrics(np.array([[1.0], [1], [3], [3]]), np.array([[0.0], [1], [2], [3]]), (12,))
    assert m["icc"]["AU12"] == pytest.approx(8 / 9, abs=1e-4) and m["mae_mean"] == pytest.approx(0.5)


def test_predictions_are_clipped_to_the_label_range():
    m = au_metrics(np.array([[-1.0], [6.0]]), np.array([[0.0], [5.0]]), (1,))
    assert m["mae_mean"] == 0.0 and m["icc_mean"] == pytest.approx(1.0)


def test_pooled_icc_is_icc_of_concatenated_folds(tmp_path):
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 6, (20, 2)).astype(np.float32) for _ in range(3)]
    preds = [g + rng.normal(0, 1 + i, g.shape).astype(np.float32) for i, g in enumerate(gts)]
    runs = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        runs.append(str(tmp_path / f"f{i}"))
        os.makedirs(runs[-1])
        save_predictions(os.path.join(runs[-1], "predictions.npz"), [f"SN{i}/{t}" for t in range(20)], p, g, (1, 2))
    pooled = pool_runs(runs)
    assert pooled["icc_mean"] == au_metrics(np.concatenate(preds), np.concatenate(gts), (1, 2))["icc_mean"]
    per_fold = [au_metrics(p, g, (1, 2))["icc_mean"] for p, g in zip(preds, gts)]
    assert pooled["per_fold_icc_mean"] == per_fold and pooled["frames"] == 60
    with pytest.raises(ValueError, match="disjoint"):
        pool_runs([runs[0], runs[0]])


# ---------------------------------------------------------------- end to end on the synthetic set

def test_synthetic_pipeline_learns_resumes_and_reevaluates(tmp_path, synthetic_root):
    """train.py -> metrics.json on the tiny preset; the fine-tune fits its training frames (ICC through
    the whole pipeline); a rerun resumes from last.pth with nothing left to do and reproduces the test
    metrics; eval.py reproduces them from the checkpoint; the dataset check runs."""
    from au_intensity import eval as au_eval, train as au_train
    root = str(synthetic_root / "DISFA")
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/synthetic.yaml"),
                      [f"data.root={root}", f"out={tmp_path / 'run'}"])
    metrics = au_train.main(cfg)
    assert metrics["frames"] == 9 * 2 and metrics["train_frames"] == 12 * 2 and metrics["unreadable"] == 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    epochs = [r for r in log if "time_s" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, cfg.optim.epochs + 1))
    assert epochs[-1]["loss"] < 0.5 * epochs[0]["loss"]
    assert au_train.main(cfg)["icc"] == metrics["icc"]                    # resumed: no epoch left to run
    fit = au_eval.main(cfg, checkpoint=str(tmp_path / "run" / "last.pth"), split="train", out=str(tmp_path / "ev"))
    assert fit["icc_mean"] > 0.5, fit                                     # measured 0.88
    again = au_eval.main(cfg, checkpoint=str(tmp_path / "run" / "last.pth"), out=str(tmp_path / "ev"))
    assert again["icc"] == metrics["icc"]

    check = subprocess.run([sys.executable, "-m", "au_intensity.data", "--check", "--dataset", "bp4d", "--root",
                            str(synthetic_root / "BP4D"), "--out", str(tmp_path / "check"), "--input-size", "48"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(check.stdout.strip().splitlines()[-1])
    assert summary["train"]["frames"] > 0 and os.path.isfile(tmp_path / "check" / "check_bp4d_devel.png")


def test_synthetic_finetune_generalises_to_held_out_subjects(tmp_path, small_preset):
    """Acceptance (issue 8): a short fine-tune from scratch reaches a mean ICC clearly above 0 on the
    held-out subjects of fold 0. The small preset: 24 frames per subject with the face filling the
    frame (``zoom``), 432 training and 216 test frames; 8 epochs of batch 16 (~30 s on one core).
    Measured: mean ICC 0.20 over the 12 AUs (a constant predictor has 0; random predictions
    scatter about 0 with s.d. ~0.03 at this size)."""
    from au_intensity import train as au_train
    root = str(small_preset("disfa") / "DISFA")
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/synthetic.yaml"),
                      [f"data.root={root}", f"out={tmp_path / 'run'}", "optim.epochs=8", "optim.batch_size=16",
                       "optim.lr=2e-3"])
    metrics = au_train.main(cfg)
    assert metrics["frames"] == 9 * 24 and metrics["train_frames"] == 12 * 24
    assert metrics["icc_mean"] > 0.12, metrics


def test_linear_mode_keeps_the_backbone_frozen(tmp_path):
    from au_intensity.model import AUIntensityNet
    from common.backbone import build_backbone
    from common import engine
    model = AUIntensityNet(build_backbone("resnet18"), 2)
    engine.configure_adaptation(model, "linear")
    before = engine.backbone_fingerprint(model)
    head = model.head.weight.detach().clone()
    data = [{"image": torch.randn(3, 32, 32), "target": torch.rand(2) * 5, "index": i} for i in range(8)]
    loader = engine.make_loader(data, batch_size=4, train=True, workers=0, seed=0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    engine.train_one_epoch(model, loader, optimizer, [1e-2] * 2, 0,
                           lambda out, b: (((out - b["target"]) ** 2).mean(), {}),
                           device=torch.device("cpu"), mode="linear", amp=False, epoch=0, seed=0, writer=None)
    assert torch.equal(before, engine.backbone_fingerprint(model))        # weights and BN statistics
    assert not torch.equal(head, model.head.weight)


def test_few_shot_subset_is_saved_and_reusable(tmp_path):
    from common import finetune
    keys = [f"SN{s:03d}/{f}" for s in range(1, 4) for f in range(1, 101)]   # 300 frames
    rows = finetune.select_training_keys(keys[::-1], fraction=0.1, seed=3, subset_file="", out_dir=str(tmp_path))
    assert len(rows) == 30 and (tmp_path / "subset_keys.txt").is_file()
    chosen = sorted(keys[::-1][i] for i in rows)
    again = finetune.select_training_keys(keys, fraction=1.0, seed=0, out_dir=str(tmp_path / "b"),
                                          subset_file=str(tmp_path / "subset_keys.txt"))
    assert sorted(keys[i] for i in again) == chosen                        # the saved file wins over fraction
    assert finetune.select_training_keys(keys, fraction=1.0, seed=0, subset_file="", out_dir="").tolist() == \
        list(range(300))
    with pytest.raises(ValueError, match="not in the training set"):
        finetune.select_training_keys(keys[:100], fraction=1.0, seed=0, out_dir=str(tmp_path / "c"),
                                      subset_file=str(tmp_path / "subset_keys.txt"))


def test_unreadable_frames_are_skipped_and_counted(tmp_path):
    from au_intensity.data import build_dataset
    from au_intensity.engine import evaluate
    from au_intensity.model import AUIntensityNet
    from common import engine
    from common.backbone import build_backbone
    _disfa_subject(str(tmp_path), "SN001", frames=6)
    (tmp_path / "Frames_LeftCamera" / "SN001" / "3.jpg").write_bytes(b"not a jpeg")
    index = index_split("disfa", str(tmp_path), ["SN001"])
    dataset = build_dataset(index, train=False, boxes_file="", input_size=32, box_scale=1.0, augment={})
    loader = engine.make_loader(dataset, batch_size=4, train=False, workers=0, seed=0)
    assert sum(batch["skipped"] for batch in loader) == 1
    model = AUIntensityNet(build_backbone("resnet18"), len(L.DISFA_AUS))
    metrics, pred = evaluate(model, loader, index, device=torch.device("cpu"))
    assert metrics["unreadable"] == 1 and metrics["frames"] == 5
    assert np.isnan(pred[2]).all() and np.isfinite(np.delete(pred, 2, axis=0)).all()


def test_face_crop_maps_the_box_onto_the_crop():
    """A box whose left half is white comes out white on the left; flipped (train, p=1) on the right."""
    from common.face_crop import MEAN, STD, FaceCrop
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, 5:25, 10:20] = 255                                           # left half of the box x 10..30, y 5..25
    box = (9.5, 4.5, 29.5, 24.5)                                          # outer pixel edges of that 20 x 20 square
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    plain = FaceCrop(size=16, box_scale=1.0, train=False)(image, box) * std + mean
    assert torch.allclose(plain[:, :, :7], torch.ones(3, 16, 7), atol=1e-5)
    assert torch.allclose(plain[:, :, 9:], torch.zeros(3, 16, 7), atol=1e-5)
    flip = FaceCrop(size=16, box_scale=1.0, train=True, rotation=0.0, scale=(1.0, 1.0), flip_prob=1.0, jitter=0.0,
                    jitter_hue=0.0)(image, box) * std + mean
    assert torch.allclose(flip, plain.flip(-1), atol=1e-5)


def test_table_collector_puts_paper_numbers_beside_ours(tmp_path):
    from au_intensity import tables
    run = tmp_path / "bp4d_vggf_ours_finetune_0.01"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(
        {"icc_mean": 0.5, "icc": {"AU6": 0.6, "AU10": -0.02, "AU12": 0.7, "AU14": 0.4, "AU17": None}}))
    lines = tables.TABLES["8"](str(tmp_path)).splitlines()
    assert lines[-1] == ("| ours, vggf_ours | 1% | .600 (.789) | -.020 (.756) | .700 (.882) | .400 (.529) | - (.578) "
                         "| .500 (.707) |")
    assert "| 100% | Ours (VGG-F) | - (.598) | - (.342) | - (.719) | - (.610) |" in tables.table7(str(tmp_path))


def test_missing_frame_images_are_named(tmp_path, capsys):
    """Labelled DISFA frames without an image are left out, counted, and the first 10 named."""
    _disfa_subject(str(tmp_path), "SN001", frames=15)
    gone = [tmp_path / "Frames_LeftCamera" / "SN001" / f"{t}.jpg" for t in range(2, 14)]   # 12 frames
    for path in gone:
        path.unlink()
    index = index_split("disfa", str(tmp_path), ["SN001"])
    assert index.counts["missing_image"] == 12 and index.keys == ["SN001/1", "SN001/14", "SN001/15"]
    out = capsys.readouterr().out
    assert "disfa: 12 labelled frames have no image file" in out and "(first 10 of 12)" in out
    assert [str(p) in out for p in gone] == [True] * 10 + [False] * 2


@pytest.mark.parametrize("override, message", [("data.fraction=1.5", r"data.fraction=1.5: must be .*\(0, 1\]"),
                                               ("data.fraction=0", r"data.fraction=0.0: must be .*\(0, 1\]"),
                                               ("optim.epochs=0", r"optim.epochs=0: epochs must be >= 1")])
def test_bad_fraction_or_zero_epochs_fail_before_the_run_folder(tmp_path, override, message):
    from au_intensity.train import main
    out = tmp_path / "run"
    cfg = load_config(os.path.join(ROOT, "au_intensity/configs/synthetic.yaml"),
                      [f"data.root={tmp_path / 'DISFA'}", f"out={out}", override])
    with pytest.raises(ValueError, match=message):
        main(cfg)
    assert not out.exists()                                              # no config.yaml of a run that never ran
