"""scripts/demo.py (`make demo`): the runs it plans and the table / claim check it prints (fabricated metrics)."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import demo  # noqa: E402


def test_plan_has_every_task_fraction_init_and_seed(tmp_path):
    runs = demo.jobs(str(tmp_path))
    assert len(runs) == 3 * (1 + 1 + 3) * 2
    names = [n for n, _ in runs]
    assert "landmarks_0.02_swav_s2" in names and "reconstruction3d_1.0_scratch_s0" in names
    cmd = dict(runs)["au_intensity_0.02_swav_s1"]
    assert f"model.init={tmp_path}/swav/backbone.pth" in cmd
    assert {"seed=1", "data.subset_seed=1", "data.fraction=0.02", "optim.epochs=60"} <= set(cmd)
    assert cmd[-1] == f"out={tmp_path}/ft/au_intensity_0.02_swav_s1"


def fabricate(out, values):
    """values(task, fraction, init, seed) -> the run's primary metric, written where demo.metric reads it."""
    for name, _ in demo.jobs(str(out)):
        task, fraction, init, seed = name.rsplit("_", 3)
        v = values(task, fraction, init, int(seed[1:]))
        obj = v
        for key in reversed(demo.TASKS[task]["metric"]):
            obj = {key: obj}
        os.makedirs(out / "ft" / name)
        (out / "ft" / name / "metrics.json").write_text(json.dumps(obj))


def test_table_and_verdicts(tmp_path):
    def values(task, fraction, init, seed):
        if task == "landmarks":          # NME: SwAV 2 lower at 2 %, 0.5 lower at 100 %
            return {"1.0": 6.0, "0.1": 8.0, "0.02": 12.0 + seed}[fraction] - (init == "swav") * (
                2.0 if fraction == "0.02" else 0.5)
        if task == "au_intensity":       # ICC: SwAV helps only at 100 %
            return 0.5 + (init == "swav") * (0.1 if fraction == "1.0" else -0.05)
        return 4.0                        # 3D: no difference anywhere
    fabricate(tmp_path, values)
    table, verdicts, summary = demo.report(str(tmp_path))
    rows = [r.split("|")[1:-1] for r in table.splitlines()[2:]]
    assert len(rows) == 9
    lm_2 = [c.strip() for c in rows[2]]
    assert lm_2[1:] == ["2% (3 seeds)", "13.000 ± 1.000", "11.000 ± 1.000", "2.000 ± 0.000"]
    assert [c.strip() for c in rows[0]][2:] == ["6.000", "5.500", "0.500"]
    assert verdicts[0].startswith("landmarks: gain of SwAV over scratch +2.000 ± 0.000 at 2 % vs +0.500 at 100 %")
    assert "holds here (beyond the seed spread)" in verdicts[0]
    assert "does NOT hold" in verdicts[1] and "does NOT hold" in verdicts[2]
    assert summary["au_intensity"]["1.0"]["gain"] == [pytest.approx(0.1)]


def test_missing_runs_show_dashes(tmp_path):
    table, verdicts, _ = demo.report(str(tmp_path))
    assert table.splitlines()[2].endswith("| – | – | – |")
    assert verdicts == ["landmarks: runs missing", "au_intensity: runs missing", "reconstruction3d: runs missing"]


def test_swav_health_compares_the_last_epoch_loss_with_ln_k(tmp_path):
    (tmp_path / "swav").mkdir()
    log = tmp_path / "swav" / "log.jsonl"
    log.write_text(json.dumps({"epoch": 0, "images": 10, "loss": 6.0}) + "\n" + json.dumps({"step": 5, "loss": 1.0})
                   + "\n" + json.dumps({"epoch": 1, "images": 10, "loss": 4.86}) + "\n")
    assert demo.swav_health(str(tmp_path)).startswith("SwAV: last epoch loss 4.860 vs ln K = 4.852 -> collapsed")
    log.write_text(json.dumps({"epoch": 0, "images": 10, "loss": 3.1}) + "\n")
    assert demo.swav_health(str(tmp_path)).endswith("not collapsed")
