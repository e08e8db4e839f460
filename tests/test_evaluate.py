"""The backbone evaluation harness (issue 20): scripts/evaluate.py on the synthetic presets, two backbones (a random
init and a short SwAV run), every task, feature-cache reuse and corruption recovery; the fine-tune protocol with
its per-cell search; the timm checkpoint layout."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from common.backbone import Backbone, build_backbone
from scripts import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("au/disfa", "au/bp4d", "emotion/affectnet", "recognition/ijbb", "recognition/ijbc", "landmarks/300w",
         "landmarks/wflw", "landmarks/aflw19", "3d/aflw2000")
SPLITS = 16   # feature extractions: a train and a test split per bench, the IJB sets' test split only


def _run(data, out, *extra):
    """The linear protocol; the paper's landmarks heads are trained in the fine-tune protocol's test."""
    return evaluate.main(["--synthetic", "--data", str(data), "--out", str(out), "--fractions", "1.0,0.1",
                          "--no-landmarks-head", *extra])["linear"]


def _metrics(results):
    return {c: v["metrics"] for c, v in results["cells"].items()}


def test_timm_layout_loads_strictly(tmp_path):
    """A timm-style ResNet state dict (torchvision names, ``model.`` prefix, ``state_dict`` wrapper, fc) loads."""
    torch.manual_seed(3)
    ref = Backbone("resnet18")
    sd = {f"model.{k}": v for k, v in ref.state_dict().items()}
    sd.update({"model.fc.weight": torch.zeros(5, 512), "model.fc.bias": torch.zeros(5)})
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "timm.pth")
    loaded = build_backbone("resnet18", str(tmp_path / "timm.pth"))
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    del sd["model.layer4.1.bn2.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="layer4.1.bn2.weight"):
        build_backbone("resnet18", str(tmp_path / "broken.pth"))


def test_primal_and_dual_ridge_agree():
    """The primal ridge (N > D) gives the dual's predictions, for every penalty of a path."""
    from scripts.evaluate_linear import PrimalRidge, Ridge
    rng = np.random.default_rng(0)
    x, y, x_new = rng.normal(size=(50, 20)), rng.normal(size=(50, 3)), rng.normal(size=(7, 20))
    for a, b in zip(PrimalRidge(x).predict_path(y, x_new, [0.01, 1.0]), Ridge(x).predict_path(y, x_new, [0.01, 1.0])):
        np.testing.assert_allclose(a, b, atol=1e-10)


def _swav_backbone(unlabelled, out):
    """A short SwAV run (2 epochs of the tiny unlabelled faces, 32 px crops) and its exported backbone.pth."""
    done = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "pretrain/configs/synthetic.yaml",
                           f"data.root={unlabelled}", f"out={out}", "data.batch_size=8", "aug.crop_sizes=[32,16]",
                           "optim.epochs=2", "checkpoint_every_iters=0"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", FACEREP_PROGRESS="0"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "backbone.pth"


def test_evaluate_two_backbones_cache_and_corruption(small_preset, synthetic_root, tmp_path, capsys):
    """Every task: the small preset's DISFA, 300W and IJB-B (enough faces for the 300W ridge to beat the mean
    shape) and the tiny preset's BP4D, AffectNet, IJB-C, WFLW, AFLW and 300W-LP -> AFLW2000-3D; a random init,
    then a short SwAV run.
    The 3D ridge learns on the small preset (outside CI: NME68 10.04 vs mean shape 18.78, scripts/README.md)."""
    small, data, out = small_preset("disfa", "300w", "ijbb"), tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    shutil.copy(synthetic_root / "manifest.json", data)    # AFLW's split size is stated in the tiny manifest
    for name in ("DISFA", "300W", "IJBB", "BP4D", "AffectNet", "IJBC", "WFLW", "AFLW", "300W_LP", "AFLW2000",
                 "face_model"):
        (data / name).symlink_to((small if (small / name).is_dir() else synthetic_root) / name)
    start = time.time()
    first = _run(data, out)
    cold = time.time() - start
    assert first["last_run"]["cache"]["misses"] == SPLITS and first["last_run"]["cache"]["hits"] == 0
    assert {c.rsplit("/", 1)[0] for c in first["cells"]} == set(TASKS) and first["skipped"] == {}
    floor = first["cells"]["landmarks/300w/1.0"]["floor"]["nme_io"]
    assert first["cells"]["landmarks/300w/1.0"]["metrics"]["nme_io"] < floor   # spatial ridge beats the mean shape
    assert np.isfinite(first["cells"]["3d/aflw2000/1.0"]["metrics"]["nme68"])
    assert first["cells"]["3d/aflw2000/1.0"]["metrics"]["yaw_source"] == "pose_file"

    assert _run(data, out)["last_run"]["cells_computed"] == []                  # finished cells are skipped
    start = time.time()
    warm = _run(data, out, "--force")                                           # every cell again, from the cache
    assert (time.time() - start) * 1.5 < cold, (cold, time.time() - start)   # no extraction: ridge + report only
    assert warm["last_run"]["cache"] == {"hits": SPLITS, "misses": 0, "rebuilt": 0}
    assert _metrics(warm) == _metrics(first)

    victim = min((out / "cache").glob("*/pooled.npy"), key=lambda p: p.stat().st_size)   # the cheapest to redo
    raw = bytearray(victim.read_bytes())
    raw[-16:] = bytes(16)
    victim.write_bytes(bytes(raw))
    capsys.readouterr()
    repaired = _run(data, out, "--force")
    assert "corrupted" in capsys.readouterr().out
    assert repaired["last_run"]["cache"] == {"hits": SPLITS - 1, "misses": 1, "rebuilt": 1}
    assert _metrics(repaired) == _metrics(first)

    radar = out / "radar.png"
    before = radar.read_bytes()
    swav = _swav_backbone(synthetic_root / "unlabelled", tmp_path / "swav")
    second = _run(data, out, "--init", str(swav), "--name", "swav")
    assert second["last_run"]["cache"]["misses"] == SPLITS
    assert _metrics(second) != _metrics(first)
    assert radar.read_bytes() != before                                         # redrawn with a second polygon
    report = (out / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert {"scratch_resnet18", "swav"} <= set(rows)
    for task in TASKS:                                                          # one table per task
        assert f"## {task.split('/')[0]}\n" in report and f"| {task.split('/')[1]}/1.0/" in report.split(
            f"## {task.split('/')[0]}\n")[1].split("## ")[0]
    assert "paper (fine-tune, Table 2)" in report and "paper (fine-tune, Tables 6/9/12): Ours (VGG-F)" in report
    saved = json.loads((out / "results" / "swav.json").read_text())
    assert np.isfinite(saved["cells"]["au/disfa/1.0"]["metrics"]["icc_mean"])


def test_finetune_protocol_searches_each_cell_and_never_selects_on_test(synthetic_root, tmp_path, monkeypatch):
    """--protocol finetune: each cell is the task's trainer through scripts/sweep.py (SEARCH=1, a 2-point grid on
    the tiny 300W), the refit's test NME is the cell's number, the chosen setting is kept, the config's test-split
    checkpoint selection (synthetic.yaml: data.val_split=common) is off, and a rerun trains nothing."""
    monkeypatch.setenv("SEARCH", "1")
    monkeypatch.setenv("SEARCH_GRID", "lr=1e-3,3e-3")
    out = tmp_path / "eval"
    base = ["--synthetic", "--data", str(synthetic_root), "--out", str(out), "--tasks", "landmarks/300w",
            "--fractions", "1.0", "--set", "optim.epochs=1", "--set", "data.num_workers=0"]
    args = base + ["--protocol", "finetune"]
    cell = evaluate.main(args)["finetune"]["cells"]["landmarks/300w/1.0"]
    assert np.isfinite(cell["metrics"]["nme_io"]) and cell["metrics"]["chosen"]["optim.lr"] in ("1e-3", "3e-3")
    run = cell["run"]
    with open(os.path.join(run, "metrics.json")) as f:
        assert cell["metrics"]["nme_io"] == json.load(f)["splits"]["private"]["nme_io"]
    with open(os.path.join(run, "search.json")) as f:
        refit = json.load(f)["refit_overrides"]
    assert "data.num_workers=0" in refit
    val_split = [o for o in refit if o.startswith("data.val_split=")]
    assert val_split[-1] == "data.val_split="          # synthetic.yaml's "common" (a test split) is switched off
    assert len(list((out / "finetune" / "scratch_resnet18" / "landmarks_300w_1.0.search" / "runs").iterdir())) == 2
    again = evaluate.main(args)["finetune"]
    assert again["last_run"]["cells_computed"] == []
    assert "| scratch_resnet18 (finetune) |" in (out / "report.md").read_text()
    with pytest.raises(SystemExit, match="--protocol linear"):
        evaluate.main(args + ["--model", "torchvision.models:resnet18"])

    monkeypatch.setenv("SEARCH", "0")      # the linear protocol's landmarks cell: the ridge and the paper's head
    linear = evaluate.main(base + ["--protocol", "linear"])["linear"]
    cell = linear["cells"]["landmarks/300w/1.0"]
    assert np.isfinite(cell["metrics"]["nme_io"]) and np.isfinite(cell["metrics"]["nme_io_head"])
    with open(os.path.join(cell["head_run"], "config.yaml")) as f:
        assert "adaptation: linear" in f.read()          # frozen backbone (common.engine checks it is unchanged)


def test_dry_run_prints_cells(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "1")
    data = tmp_path / "none"
    os.makedirs(data / "300W")
    assert evaluate.main(["--data", str(data), "--out", str(tmp_path / "o"), "--tasks", "landmarks"]) is None
    text = capsys.readouterr().out
    assert "skip landmarks/300w" in text and "dry run, linear: 0 cells" in text


def test_dry_run_counts_the_finetune_search(synthetic_root, tmp_path, capsys, monkeypatch):
    """DRY_RUN with SEARCH=1: each fine-tune cell is the default grid (3 lr x 3 lengths x 2 backbone lr) and a refit."""
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("SEARCH", "1")
    evaluate.main(["--synthetic", "--data", str(synthetic_root), "--out", str(tmp_path / "o"), "--tasks",
                   "landmarks/300w,au/disfa", "--fractions", "1.0,0.1", "--protocol", "both", "--set",
                   "optim.epochs=4"])
    text = capsys.readouterr().out
    assert "cell finetune landmarks/300w/0.1" in text and "cell linear au/disfa/1.0" in text
    # per cell 18 runs of 2, 4 or 8 epochs (6 each: 84 epochs) and a refit at the longest (8): 19 runs, 92 epochs
    assert "dry run, finetune (SEARCH=1): 4 cells, 76 training runs, 368 epochs" in text
