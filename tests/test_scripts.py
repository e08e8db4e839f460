"""scripts/tableN.sh and figN.sh: the commands they launch (DRY_RUN=1) in --synthetic and paper mode, and two real
--synthetic runs (fig5.sh and a part of table12.sh) end to end on the built-in set."""
import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_LM = "model.arch=resnet18 data.input_size=64 data.heatmap_size=16 data.sigma=2.0".split()


@pytest.fixture
def syn(tmp_path):
    """A stand-in synthetic data folder (only its manifest) and a runs folder holding the tiny backbone."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    (runs / "pretrain/swav_tiny").mkdir(parents=True)
    (runs / "pretrain/swav_tiny/backbone.pth").write_text("")
    return data, runs


def launched(script, env=None, synthetic=True, check=True):
    """The commands ``scripts/<script>`` prints under DRY_RUN=1, each split into words."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("NGPU", "LAUNCH", "RUNS", "EXTRA", "DATA")}
    full_env.update(DRY_RUN="1", **(env or {}))
    done = subprocess.run(["bash", f"scripts/{script}"] + (["--synthetic"] if synthetic else []), cwd=ROOT,
                          env=full_env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")], done


def of(cmds, module):
    return [c for c in cmds if module in c]


def value(cmd, key):
    """The last ``key=value`` of a command (later overrides win)."""
    return [a.split("=", 1)[1] for a in cmd if a.startswith(key + "=")][-1]


def env_for(syn, **extra):
    data, runs = syn
    return {"SYN_DATA": str(data), "SYN_RUNS": str(runs), **extra}


def test_table6_synthetic_runs_every_cell_at_tiny_scale(syn):
    cmds, _ = launched("table6.sh", env_for(syn))
    trains = of(cmds, "landmarks.train")
    assert len(trains) == 5 * 3 * 3 and len(of(cmds, "landmarks.eval")) == 15
    outs = {value(c, "out").rsplit("/", 1)[1] for c in trains}
    assert outs == {f"{d}_{f}_{m}" for d in ("300w", "wflw", "aflw19") for f in ("1.0", "0.1", "0.02")
                    for m in ("scratch", "imagenet", "sup_vggf", "ours_flickrf", "ours_vggf")}
    for c in trains:
        assert c[:3] == [".venv/bin/python", "-m", "landmarks.train"] and value(c, "optim.epochs") == "1"
        assert all(a in c for a in TINY_LM) and value(c, "data.root").startswith(str(syn[0]))
        assert value(c, "out").startswith(f"{syn[1]}/landmarks/")
    assert {value(c, "model.init") for c in trains} == {"scratch", f"{syn[1]}/pretrain/swav_tiny/backbone.pth"}
    assert all(a in of(cmds, "landmarks.eval")[0] for a in TINY_LM)      # COFW-68 evaluated at the trained size
    assert of(cmds, "landmarks.tables")


def test_table6_paper_mode_uses_the_paper_configs_and_ngpu(syn):
    cmds, _ = launched("table6.sh", {"DATA": "/data", "NGPU": "4", "SUP_VGGF": "/c/sup.pth", "FLICKR_CKPT": "/c/f.pth",
                                     "VGGF_CKPT": "/c/v.pth", "RUNS": "/r", "METHODS": "scratch ours_vggf",
                                     "SEARCH": "0"}, synthetic=False)
    trains = of(cmds, "landmarks.train")
    assert len(trains) == 2 * 3 * 3
    assert trains[0][:6] == ["torchrun", "--nproc_per_node=4", "-m", "landmarks.train", "--config",
                             "landmarks/configs/300w.yaml"]
    assert {(value(c, "data.fraction"), value(c, "optim.epochs")) for c in trains} == {
        ("1.0", "60"), ("0.1", "240"), ("0.02", "480")}
    assert not any("model.arch=resnet18" in c for c in trains)
    assert value(trains[1], "data.root") == "/data/WFLW" and value(trains[3], "model.init") == "/c/v.pth"


@pytest.mark.parametrize("script, task, cells", [("table6.sh", "landmarks", 2 * 3 * 3), ("table4.sh", "face_recognition", 12),
                                                 ("table7.sh", "au_intensity", 3 + 1), ("table9.sh", "reconstruction3d", 15),
                                                 ("table12.sh", "emotion", 1)])
def test_paper_mode_searches_every_cell_on_its_own_training_data(syn, script, task, cells):
    """SEARCH=1 is the default on real data: each cell is one sweep.py whose refit lands in the cell's folder
    (the table reads it unchanged), over lr x E/2, E, 2E x backbone lr; DRY_RUN ends with the run / GPU-hour count."""
    env = {"DATA": "/d", "RUNS": "/r", "FLICKR_CKPT": "/f.pth", "VGGF_CKPT": "/v.pth", "SUP_VGGF": "/s.pth",
           "METHODS": {"table6.sh": "scratch ours_vggf", "table7.sh": "scratch", "table12.sh": "scratch"}.get(script),
           "FRACTIONS": "1.0" if script in ("table7.sh", "table12.sh") else None}
    cmds, done = launched(script, {k: v for k, v in env.items() if v}, synthetic=False)
    sweeps = [c for c in cmds if "scripts/sweep.py" in c]
    assert len(sweeps) == cells and not any(f"{task}.train" in c for c in cmds)
    for c in sweeps:
        assert c[c.index("--task") + 1] == task
        final = c[c.index("--final-out") + 1]
        assert c[c.index("--out") + 1] == final + ".search" and final.startswith("/r/")
        grid = c[c.index("--grid") + 1]
        assert grid.count("=") == 3 and "backbone_lr_mult=0.1,1" in grid
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"search: {cells} cells, ") and summary.endswith("GPU-hours at 1000 images/s per GPU")
    if script == "table6.sh":
        epochs = {(value(c, "data.fraction"), c[c.index("--grid") + 1].split("epochs=")[1].split(",backbone")[0])
                  for c in sweeps}
        assert epochs == {("1.0", "30,60,120"), ("0.1", "120,240,480"), ("0.02", "240,480,960")}


def test_search_grid_override_and_search_table(syn, tmp_path):
    cmds, _ = launched("table9.sh", {"DATA": "/d", "RUNS": "/r", "SEARCH_GRID": "lr=0.1,epochs=2"}, synthetic=False)
    assert {c[c.index("--grid") + 1] for c in cmds if "scripts/sweep.py" in c} == {"lr=0.1,epochs=2"}
    cell = tmp_path / "300wlp_0.1_scratch"
    cell.mkdir()
    (cell / "search.json").write_text(json.dumps({"chosen": {"optim.lr": "0.1", "optim.epochs": "2"},
                                                  "validation": {"metric": "vertex_l1", "value": 0.0123}}))
    done = subprocess.run([sys.executable, "scripts/search_table.py", "--runs", str(tmp_path), "--out",
                           str(tmp_path / "search.md")], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "| 300wlp_0.1_scratch | 2 | 0.1 | vertex_l1 0.0123 |" in done.stdout
    assert (tmp_path / "search.md").read_text() == done.stdout


def test_missing_checkpoint_stops_with_one_clear_line(tmp_path):
    done = subprocess.run(["bash", "scripts/table5.sh"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, VGGF_CKPT=str(tmp_path / "none.pth"), DATA=str(tmp_path)))
    assert done.returncode == 1 and done.stderr.strip() == (
        f"missing Ours (VGG-F) checkpoint: {tmp_path}/none.pth (set VGGF_CKPT)")


# script -> (train module, expected training runs, other modules it must call) in --synthetic DRY_RUN mode
EXPECTED = {
    "table1.sh": ("landmarks.train", 4, ("pretrain.train", "au_intensity.train", "scripts/collect.py")),
    "table2.sh": ("face_recognition.train", 12, ("pretrain.train", "landmarks.train", "au_intensity.eval")),
    "table3.sh": ("au_intensity.train", 27, ("landmarks.export", "au_intensity.eval", "au_intensity.tables")),
    "table4.sh": ("face_recognition.train", 12, ("face_recognition.table4",)),
    "table5.sh": ("landmarks.train", 9, ("landmarks.tables",)),
    "table7.sh": ("au_intensity.train", 81 + 27, ("au_intensity.eval", "au_intensity.tables")),
    "table8.sh": ("au_intensity.train", 3, ("au_intensity.tables",)),
    "table9.sh": ("reconstruction3d.train", 15, ("reconstruction3d.tables",)),
    "table10.sh": ("au_intensity.train", 9, ("au_intensity.eval", "au_intensity.tables")),
    "table11.sh": ("au_intensity.train", 3, ("au_intensity.tables",)),
    "table12.sh": ("emotion.train", 12, ("emotion.tables",)),
    "fig6.sh": ("reconstruction3d.eval", 15, ("reconstruction3d.fig6",)),
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_every_script_has_a_synthetic_mode_at_tiny_scale(syn, script):
    module, n, others = EXPECTED[script]
    cmds, _ = launched(script, env_for(syn))
    runs = of(cmds, module)
    assert len(runs) == n
    for other in others:
        assert of(cmds, other), other
    for c in cmds:
        if any(m.endswith(".train") and m != "pretrain.train" for m in c):
            assert value(c, "optim.epochs") == "1" and value(c, "model.arch") == "resnet18", c
        assert not any(a.startswith("data.root=") and not a.startswith(f"data.root={syn[0]}") for a in c), c
        assert not any(a.startswith("out=") and not a.startswith(f"out={syn[1]}") for a in c), c
    assert not of(cmds, "common.synthetic")                 # the synthetic set exists: not written again


def test_table4_reuses_one_subset_per_regime_and_defaults_to_8_gpus(syn):
    cmds, _ = launched("table4.sh", {"DATA": "/d", "FLICKR_CKPT": "/f.pth", "VGGF_CKPT": "/v.pth", "RUNS": "/r",
                                     "SEARCH": "0"}, synthetic=False)
    assert all(c[:2] == ["torchrun", "--nproc_per_node=8"] for c in of(cmds, "face_recognition.train"))
    ten = [c for c in cmds if "data.fraction=0.1" in c]
    assert not any(a.startswith("data.subset_file") for a in ten[0])
    assert all(value(c, "data.subset_file") == "/r/fr_scratch_10/subset.txt" for c in ten[1:])


def test_table1_pretrains_three_methods_with_the_paper_recipes(syn):
    cmds, _ = launched("table1.sh", {"VGGFACE": "/lists/vgg.txt", "DATA": "/d", "DISFA": "/d/DISFA", "PT_NGPU": "8",
                                     "PT_RUNS": "/pt", "LM_RUNS": "/lm", "AU_RUNS": "/au", "SEARCH": "0"},
                       synthetic=False)
    pre = of(cmds, "pretrain.train")
    assert [value(c, "out") for c in pre] == ["/pt/moco_vggf", "/pt/swav256_vggf", "/pt/swav_vggf"]
    assert [c[5] for c in pre] == ["pretrain/configs/moco_r50.yaml", "pretrain/configs/swav_r50_bs256.yaml",
                                   "pretrain/configs/swav_r50.yaml"]
    assert all(c[:2] == ["torchrun", "--nproc_per_node=8"] for c in pre)
    lm = of(cmds, "landmarks.train")
    assert [value(c, "out") for c in lm] == ["/lm/300w_0.02_scratch", "/lm/300w_0.02_moco_vggf",
                                             "/lm/300w_0.02_ours_vggf", "/lm/300w_0.02_swav256_vggf"]
    assert {value(c, "data.fraction") for c in of(cmds, "au_intensity.train")} == {"0.01"}


def test_fig2_lists_the_sweep_jobs(synthetic_root, tmp_path):
    cmds, done = launched("fig2.sh", {"SYN_DATA": str(synthetic_root), "SYN_RUNS": str(tmp_path)})
    jobs = [line for line in done.stdout.splitlines() if "&&" in line]
    assert len(jobs) == 3 * 2 * 2                           # 3 inits x epochs {1, 2} x backbone lr {0.1, 1}
    train = shlex.split(jobs[0].split(" && ")[0])
    assert value(train, "data.subset_file") == f"{tmp_path}/fig2/split/train_keys.txt"
    assert value(train, "optim.lr") == "3e-3" and value(train, "data.val_split") == ""


def test_fig5_synthetic_draws_the_face_size_histogram(synthetic_root, tmp_path):
    env = dict(os.environ, SYN_DATA=str(synthetic_root), SYN_RUNS=str(tmp_path))
    done = subprocess.run(["bash", "scripts/fig5.sh", "--synthetic"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode and "--fetch-mtcnn" in done.stderr:
        pytest.skip("MTCNN weights not available offline")
    assert done.returncode == 0, done.stderr
    hist = json.loads((tmp_path / "fig5/face_sizes.json").read_text())
    summary = json.loads((tmp_path / "fig5/summary.json").read_text())
    assert hist["n"] == summary["faces"] == sum(hist["counts"]) > 0
    assert (tmp_path / "fig5/face_sizes.png").stat().st_size > 1000


def test_table12_synthetic_part_runs_end_to_end(synthetic_root, tmp_path):
    env = dict(os.environ, SYN_DATA=str(synthetic_root), SYN_RUNS=str(tmp_path), SYN_NO_BACKBONE="1",
               METHODS="scratch", FRACTIONS="0.1", PY=sys.executable)
    done = subprocess.run(["bash", "scripts/table12.sh", "--synthetic"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "emotion/affectnet_scratch_0.1/metrics.json").read_text())
    assert metrics["train_images"] == 1 and metrics["fraction"] == 0.1
    line = [r for r in done.stdout.splitlines() if r.startswith("| 10% | random |")][0]
    assert line.split("|")[3].strip() == f"{metrics['accuracy']:.3f} (0.493)"
