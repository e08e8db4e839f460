"""The backbone evaluation harness (issue 20): scripts/evaluate.py on the small synthetic preset, two backbones,
feature-cache reuse and corruption recovery; the timm checkpoint layout."""
import json
import os
import time

import numpy as np
import pytest
import torch

from common.backbone import Backbone, build_backbone
from scripts import evaluate

TASKS_WITH_DATA = ("au/disfa", "recognition/ijbb", "landmarks/300w")


def _run(data, out, *extra):
    return evaluate.main(["--synthetic", "--data", str(data), "--out", str(out), "--fractions", "1.0,0.1", *extra])


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


def test_evaluate_two_backbones_cache_and_corruption(small_preset, tmp_path, capsys):
    data, out = small_preset("disfa", "300w", "ijbb"), tmp_path / "eval"
    start = time.time()
    first = _run(data, out)
    cold = time.time() - start
    assert first["last_run"]["cache"]["misses"] == 5 and first["last_run"]["cache"]["hits"] == 0
    assert {c.rsplit("/", 1)[0] for c in first["cells"]} == set(TASKS_WITH_DATA)
    assert "emotion/affectnet" in first["skipped"] and "au/bp4d" in first["skipped"]
    floor = first["cells"]["landmarks/300w/1.0"]["floor"]["nme_io"]
    assert first["cells"]["landmarks/300w/1.0"]["metrics"]["nme_io"] < floor   # spatial ridge beats the mean shape

    assert _run(data, out)["last_run"]["cells_computed"] == []                  # finished cells are skipped
    start = time.time()
    warm = _run(data, out, "--force")                                           # every cell again, from the cache
    assert (time.time() - start) * 1.5 < cold, (cold, time.time() - start)   # no extraction: ridge + report only
    assert warm["last_run"]["cache"] == {"hits": 5, "misses": 0, "rebuilt": 0}
    assert _metrics(warm) == _metrics(first)

    victim = min((out / "cache").glob("*/pooled.npy"), key=lambda p: p.stat().st_size)   # the cheapest to redo
    raw = bytearray(victim.read_bytes())
    raw[-16:] = bytes(16)
    victim.write_bytes(bytes(raw))
    capsys.readouterr()
    repaired = _run(data, out, "--force")
    assert "corrupted" in capsys.readouterr().out
    assert repaired["last_run"]["cache"] == {"hits": 4, "misses": 1, "rebuilt": 1}
    assert _metrics(repaired) == _metrics(first)

    radar = out / "radar.png"
    before = radar.read_bytes()
    torch.manual_seed(1)
    torch.save(Backbone("resnet18").state_dict(), tmp_path / "seed1.pth")       # torchvision layout
    second = _run(data, out, "--init", str(tmp_path / "seed1.pth"), "--name", "seed1")
    assert second["last_run"]["cache"]["misses"] == 5
    assert _metrics(second) != _metrics(first)
    assert radar.read_bytes() != before                                         # redrawn with a second polygon
    report = (out / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert {"scratch_resnet18", "seed1"} <= set(rows)
    for task in TASKS_WITH_DATA:
        assert f"{task}/1.0/" in report
    assert "paper (fine-tune, Table 2)" in report and "not in v1" in report
    saved = json.loads((out / "results" / "seed1.json").read_text())
    assert np.isfinite(saved["cells"]["au/disfa/1.0"]["metrics"]["icc_mean"])


def test_dry_run_prints_cells(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "1")
    data = tmp_path / "none"
    os.makedirs(data / "300W")
    assert evaluate.main(["--data", str(data), "--out", str(tmp_path / "o"), "--tasks", "landmarks"]) is None
    text = capsys.readouterr().out
    assert "skip landmarks/300w" in text and "dry run: 0 cells" in text
