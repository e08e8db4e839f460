"""log.jsonl writer and reader: one object per line, non-finite values kept readable, torn tails, TensorBoard."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.logger import JsonlWriter, log, progress, read_jsonl


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "run" / "log.jsonl"
    writer = JsonlWriter(str(path))
    writer.write({"step": 1, "loss": torch.tensor(2.5), "lr": np.float32(0.25)})
    writer.write({"step": 2, "loss": float("nan"), "extra": [torch.tensor(1.0), 2]})
    assert read_jsonl(str(path)) == [{"step": 1, "loss": 2.5, "lr": 0.25},
                                     {"step": 2, "loss": "nan", "extra": [1.0, 2]}]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_torn_last_line_is_skipped_but_torn_middle_raises(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(str(path)) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):
        read_jsonl(str(path))


def test_non_zero_rank_is_silent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    writer = JsonlWriter(str(tmp_path / "log.jsonl"))
    writer.write({"a": 1})
    log("hidden")
    assert not (tmp_path / "log.jsonl").exists()
    assert capsys.readouterr().out == ""
    items = [1, 2, 3]
    assert progress(items) is items
    monkeypatch.setenv("RANK", "0")
    log("shown")
    assert "shown" in capsys.readouterr().out


def test_write_json_is_atomic_sorted_and_leaves_no_temporary(tmp_path, monkeypatch):
    from common import files
    path = tmp_path / "run" / "metrics.json"                    # the folder is made
    files.write_json(path, {"b": 1.5, "a": {"nme_io": 3.25}})
    assert path.read_text() == '{\n "a": {\n  "nme_io": 3.25\n },\n "b": 1.5\n}\n'

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.write_json(path, {"c": 2})
    assert json.loads(path.read_text()) == {"a": {"nme_io": 3.25}, "b": 1.5}  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_first_paths_names_ten_and_counts_the_rest():
    from common.files import first_paths
    assert first_paths(["a", "b"]) == "a, b"
    named = first_paths([f"img{i}.jpg" for i in range(12)])
    assert named == ", ".join(f"img{i}.jpg" for i in range(10)) + " (first 10 of 12)"


def test_tensorboard_mirror_holds_the_same_scalars(tmp_path):
    """tensorboard=true: step records at their iteration under step/, epoch records at their epoch under
    epoch/, nested dicts flattened; read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    writer = JsonlWriter(str(tmp_path / "log.jsonl"), tensorboard=True)
    writer.write({"epoch": 1, "iteration": 0, "loss": 2.0, "lr": 0.1})
    writer.write({"epoch": 1, "iteration": 5, "loss": 1.5, "lr": 0.1})
    writer.write({"epoch": 1, "loss": 1.75, "val_nme": 0.25, "probe": {"knn": 0.5}, "note": "text"})
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert sorted(events.Tags()["scalars"]) == ["epoch/loss", "epoch/probe/knn", "epoch/val_nme", "step/loss",
                                                "step/lr"]
    assert [(e.step, e.value) for e in events.Scalars("step/loss")] == [(0, 2.0), (5, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("epoch/val_nme")] == [(1, 0.25)]
    assert read_jsonl(str(tmp_path / "log.jsonl"))[2]["note"] == "text"          # log.jsonl unchanged


def test_tensorboard_is_imported_only_when_switched_on(tmp_path):
    code = ("import sys; from common.logger import JsonlWriter; "
            f"JsonlWriter({str(tmp_path / 'log.jsonl')!r}).write({{'iteration': 0, 'loss': 1.0}}); "
            "assert not any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert not (tmp_path / "tensorboard").exists()
