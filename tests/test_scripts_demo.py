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
    assert {"seed=1", "data.subset_seed=1", "data.fraction=0.02", "optim.epochs=40"} <= set(cmd)
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
    floors = {"landmarks": 5.8, "au_intensity": 0.0, "reconstruction3d": 5.0}
    table, verdicts, summary = demo.report(str(tmp_path), floors)
    rows = [r.split("|")[1:-1] for r in table.splitlines()[2:]]
    assert len(rows) == 9
    lm_2 = [c.strip() for c in rows[2]]
    assert lm_2[1:] == ["2% (3 seeds)", "13.000 ± 1.000", "11.000 ± 1.000", "2.000 ± 0.000", "5.800 (training mean shape)"]
    assert [c.strip() for c in rows[0]][2:5] == ["6.000", "5.500", "0.500"]
    assert verdicts[0].startswith("landmarks: gain of SwAV over scratch +2.000 ± 0.000 at 2 % vs +0.500 at 100 %")
    assert "holds here (beyond the seed spread)" in verdicts[0]
    # floors: landmarks scratch 6.0 does not beat a 5.8 mean shape, SwAV 5.5 does; 3D 4.0 < 5.0 both beat
    assert verdicts[1] == ("landmarks at 100 %: scratch 6.000 does NOT beat, swav 5.500 beats the training mean "
                           "shape (5.800)")
    assert "does NOT hold" in verdicts[2] and "does NOT hold" in verdicts[4]
    assert "scratch 0.500 beats, swav 0.600 beats the constant predictor" in verdicts[3]
    assert summary["au_intensity"]["1.0"]["gain"] == [pytest.approx(0.1)]
    assert summary["landmarks"]["floor"] == 5.8
    demo.plot_gain(summary, str(tmp_path / "gain.png"))
    assert (tmp_path / "gain.png").stat().st_size > 10_000


def test_missing_runs_show_dashes(tmp_path):
    table, verdicts, _ = demo.report(str(tmp_path))
    assert table.splitlines()[2].endswith("| – | – | – | – |")
    assert verdicts == ["landmarks: runs missing", "au_intensity: runs missing", "reconstruction3d: runs missing"]


def test_pretraining_summary_says_collapse_and_each_probe_against_the_random_init(tmp_path):
    (tmp_path / "swav").mkdir()
    probes = {"step0": {"step": 0, "identity_knn": 0.05, "landmarks_nme": 15.0},
              "final": {"step": 500, "identity_knn": 0.04, "landmarks_nme": 14.0},
              "floors": {"identity_knn": 0.01, "landmarks_nme": 28.0}, "history": []}
    (tmp_path / "swav" / "metrics.json").write_text(json.dumps({"collapsed": False, "probes": probes,
                                                                "probe_fraction": 0.03}))
    summary = demo.pretraining_summary(str(tmp_path))
    assert summary["collapsed"] is False and summary["final"]["landmarks_nme"] == 14.0
    lines = demo.swav_health(summary)
    assert lines[0] == "SwAV pre-training: not collapsed"
    assert lines[1] == "probe identity_knn: random init 0.05 -> SwAV 0.04 (NOT better; floor 0.01)"
    assert lines[2] == "probe landmarks_nme: random init 15 -> SwAV 14 (better; floor 28)"
    assert demo.swav_health(demo.pretraining_summary(str(tmp_path / "none"))) == ["SwAV: no metrics.json"]
