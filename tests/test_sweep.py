"""scripts/sweep.py (paper §3.3, Fig. 2): grid parsing, validation carve-out, caching, selection, refit, emit."""
import json
import os
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import sweep  # noqa: E402
import sweep_tasks  # noqa: E402
from common.config import load_config  # noqa: E402
from common.subsample import load_keys  # noqa: E402

LM_CONFIG = os.path.join(ROOT, "landmarks/configs/synthetic.yaml")


def test_parse_grid_keys_start_with_equals_and_values_follow():
    assert sweep.parse_grid(["lr=1e-4,3e-4,epochs=60,120", "backbone_lr_mult=0.1"]) == [
        ("lr", ["1e-4", "3e-4"]), ("epochs", ["60", "120"]), ("backbone_lr_mult", ["0.1"])]
    with pytest.raises(ValueError, match="start with key=value"):
        sweep.parse_grid(["1e-4,lr=2"])
    with pytest.raises(ValueError, match="twice"):
        sweep.parse_grid(["lr=1", "lr=2"])


def test_an_axis_leaves_the_grid_wherever_it_stands():
    """A frozen backbone (evaluate's linear landmarks heads) searches without the backbone-relative lr."""
    grid = sweep_tasks.default_grid("landmarks", 60)
    assert sweep_tasks.without_axis(grid, "backbone_lr_mult") == "lr=3e-5,1e-4,3e-4,epochs=30,60,120"
    assert sweep_tasks.without_axis("optim.backbone_lr_mult=0.1,1,lr=1,2,epochs=3", "backbone_lr_mult") == \
        "lr=1,2,epochs=3"


def test_grid_names_map_to_config_keys_and_missing_keys_name_the_task():
    assert sweep.resolve_key("lr", LM_CONFIG, "landmarks") == "optim.lr"
    assert sweep.resolve_key("backbone_lr_mult", LM_CONFIG, "landmarks") == "optim.backbone_lr_mult"
    assert sweep.resolve_key("data.sigma", LM_CONFIG, "landmarks") == "data.sigma"
    r3d = os.path.join(ROOT, "reconstruction3d/configs/300wlp.yaml")
    assert sweep.resolve_key("backbone_lr_mult", r3d, "reconstruction3d") == "optim.backbone_lr_mult"
    with pytest.raises(SystemExit, match="reconstruction3d .* no key 'optim.warmup'"):
        sweep.resolve_key("optim.warmup", r3d, "reconstruction3d")


def test_run_hash_uses_resolved_values():
    from common.config import load_config
    a, b, c = (["optim.lr=1e-4"], ["optim.lr=0.0001"], ["optim.lr=2e-4"])
    h = [sweep.run_hash("landmarks", LM_CONFIG, o, load_config(LM_CONFIG, o)) for o in (a, b, c)]
    assert h[0] == h[1] != h[2]


def test_carve_holds_out_whole_groups_deterministically():
    keys = [f"F{s:03d}/T1/{f}" for s in range(10) for f in range(5)]
    train, val = sweep_tasks.carve(keys, sweep_tasks._subject, 0.2, seed=0)
    assert len(val) == 10 and len(train) == 40 and not set(train) & set(val)
    assert len({k.split("/")[0] for k in val}) == 2                  # 2 of 10 subjects, all their frames
    assert not {k.split("/")[0] for k in val} & {k.split("/")[0] for k in train}
    assert sweep_tasks.carve(list(reversed(keys)), sweep_tasks._subject, 0.2, seed=0) == (train, val)
    # never every group, never none
    train2, val2 = sweep_tasks.carve(["a", "b"], sweep_tasks._whole_key, 0.99, seed=0)
    assert len(train2) == 1 and len(val2) == 1
    with pytest.raises(ValueError, match="1 group"):
        sweep_tasks.carve(["a/1", "a/2"], sweep_tasks._subject, 0.2, seed=0)


def test_300wlp_views_and_flips_of_one_face_share_a_group():
    g = sweep_tasks.r3d_group
    assert g("AFW/AFW_134212_1_0") == g("AFW/AFW_134212_1_7") == g("AFW_Flip/AFW_134212_1_3") == "AFW/AFW_134212_1"
    assert g("AFW/AFW_134212_2_0") != g("AFW/AFW_134212_1_0")


def test_wflw_faces_of_one_image_stay_on_one_side_of_the_validation_split():
    keys = [f"img{i}.jpg@{x}.0_{y}.0" for i in range(6) for x, y in ((10, 20), (30, 40))] + ["aflw/a.jpg#3"]
    assert sweep_tasks._source_image(keys[0]) == "img0.jpg" and sweep_tasks._source_image(keys[-1]) == "aflw/a.jpg"
    train, val = sweep_tasks.carve(keys, sweep_tasks.TASKS["landmarks"]["group"], 0.34, 0)
    assert {sweep_tasks._source_image(k) for k in train}.isdisjoint(sweep_tasks._source_image(k) for k in val)
    assert len(val) % 2 == 0 and val


def test_face_recognition_validates_on_held_out_identities(small_preset, tmp_path):
    """The sweep carves whole identities; the score is verification TAR among their faces, from a checkpoint."""
    from face_recognition import train as fr_train
    config = os.path.join(ROOT, "face_recognition/configs/synthetic.yaml")
    root = str(small_preset("vggface2"))
    keys = sweep_tasks.fr_keys(load_config(config, [f"data.root={root}"]))
    train, val = sweep_tasks.carve(keys, sweep_tasks.TASKS["face_recognition"]["group"], 0.2, 0)
    assert {k.split("/")[0] for k in train}.isdisjoint(k.split("/")[0] for k in val)
    cfg = load_config(config, [f"data.root={root}", f"out={tmp_path}", "optim.epochs=0", "eval.after_train=false"])
    fr_train.main(cfg)                                                    # epochs=0: the initialisation
    value, metric, lower = sweep_tasks.fr_score(cfg, str(tmp_path / "last.pth"), keys=val, per_identity=4)
    assert metric == "tar_at_far_0.001" and not lower and 0.0 <= value <= 1.0
    with pytest.raises(ValueError, match="held-out training identities"):
        sweep_tasks.fr_score(cfg, str(tmp_path / "last.pth"), split="val")


def test_count_gives_runs_and_epochs_without_data(capsys):
    argv = ["--task", "landmarks", "--config", LM_CONFIG, "--grid", "lr=1e-3,2e-3,epochs=2,4", "--init", "a=scratch",
            "--out", "/nowhere", "--count", "data.root=/nowhere"]
    assert sweep.main(argv) is None
    # 2 lr x 2 epochs = 4 runs of 2+4+2+4 epochs, and a refit at the longest schedule
    assert json.loads(capsys.readouterr().out) == {"runs": 5, "epochs": 16, "gpu_hours": 0.0}
    sweep.main(argv + ["--images", "36000", "--img-per-s", "100", "--gpus", "2", "data.fraction=0.5"])
    assert json.loads(capsys.readouterr().out)["gpu_hours"] == 16 * 36000 * 0.5 / 100 / 3600 * 2


@pytest.fixture
def fake_landmarks(monkeypatch):
    """20 fake training keys and a fake runner: validation error is a known function of the combination."""
    keys = [f"afw/img{i:02d}" for i in range(20)]
    monkeypatch.setitem(sweep_tasks.TASKS["landmarks"], "keys", lambda cfg: keys)
    calls = []

    def fake_run(cmd, log_path):
        calls.append(cmd)
        args = dict(a.split("=", 1) for a in cmd if "=" in a and not a.startswith("-"))
        if any(c.endswith("sweep_val.py") for c in cmd):
            epochs, mult = int(args["optim.epochs"]), float(args["optim.backbone_lr_mult"])
            value = abs(epochs - 4) + abs(mult - 0.1) + (0 if args["model.init"] == "scratch" else -1)
            out = cmd[cmd.index("--out") + 1]
            with open(out, "w") as f:
                json.dump({"metric": "nme_io", "value": value, "lower_is_better": True}, f)
        else:
            os.makedirs(args["out"], exist_ok=True)
            with open(os.path.join(args["out"], "metrics.json"), "w") as f:
                json.dump({"splits": {"full": {"nme_io": 5.0 + float(args["optim.backbone_lr_mult"])}}}, f)
    monkeypatch.setattr(sweep, "run_logged", fake_run)
    return keys, calls


def test_sweep_selects_on_held_out_keys_refits_and_caches(tmp_path, fake_landmarks, capsys):
    keys, calls = fake_landmarks
    out = str(tmp_path / "sw")
    argv = ["--task", "landmarks", "--config", LM_CONFIG, "--grid", "lr=3e-3,epochs=2,4", "--grid",
            "backbone_lr_mult=0.1,1", "--init", "scratch=scratch", "--init", "ours=/ckpt.pth", "--out", out,
            "data.root=/nowhere"]
    summary = sweep.main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(summary))
    train_keys, val_keys = load_keys(f"{out}/split/train_keys.txt"), load_keys(f"{out}/split/val_keys.txt")
    assert len(val_keys) == 4 and sorted(train_keys + val_keys) == keys
    trains = [c for c in calls if "landmarks.train" in c]
    assert len(trains) == 8 + 2                                  # 2 inits x 4 combinations, then 2 refits
    for c in trains[:8]:                                          # sweep runs: held-out split, no test-split selection
        assert f"data.subset_file={out}/split/train_keys.txt" in c and "data.val_split=" in c
    for c in trains[8:]:                                          # refits: the whole data point
        assert not any(a.startswith("data.subset_file") for a in c) and "/final/" in c[-1]
    for name in ("scratch", "ours"):
        best = summary["inits"][name]
        assert best["best"] == {"optim.lr": "3e-3", "optim.epochs": "4", "optim.backbone_lr_mult": "0.1"}
        assert best["best_val"]["value"] == (0.0 if name == "scratch" else -1.0)
        assert best["test"]["full.nme_io"] == pytest.approx(5.1) and best["test"]["refit"]
        assert len(best["runs"]) == 4
    assert os.path.getsize(f"{out}/fig2.png") > 10_000
    assert json.load(open(f"{out}/sweep.json"))["validation"]["val"] == 4
    n = len(calls)
    sweep.main(argv)                                              # every run left val.json / metrics.json: all skipped
    assert len(calls) == n


def test_refit_never_selects_on_a_test_split(tmp_path, fake_landmarks):
    """A data point that names the test split "common" as val_split: every sweep run and the refit switch
    the selection off (the last data.val_split wins), and the refit lands in --final-out with search.json."""
    keys, calls = fake_landmarks
    final = tmp_path / "cell"
    sweep.main(["--task", "landmarks", "--config", LM_CONFIG, "--grid", "lr=3e-3,epochs=2,4,backbone_lr_mult=1",
                "--init", "a=scratch", "--out", str(tmp_path / "sw"), "--final-out", str(final),
                "data.root=/nowhere", "data.val_split=common"])
    trains = [c for c in calls if "landmarks.train" in c]
    assert len(trains) == 3 and all(value(c, "data.val_split") == "" for c in trains)
    assert value(trains[-1], "out") == str(final)
    chosen = json.load(open(final / "search.json"))
    assert chosen["chosen"] == {"optim.lr": "3e-3", "optim.epochs": "4", "optim.backbone_lr_mult": "1"}
    assert chosen["validation"]["value"] == pytest.approx(0.9)
    with pytest.raises(SystemExit, match="one --init"):
        sweep.main(["--task", "landmarks", "--config", LM_CONFIG, "--grid", "lr=1", "--init", "a=scratch",
                    "--init", "b=scratch", "--out", str(tmp_path / "x"), "--final-out", str(final)])


def value(cmd, key):
    """The last ``key=value`` of a command (later overrides win)."""
    return [a.split("=", 1)[1] for a in cmd if a.startswith(key + "=")][-1]


def test_emit_shell_and_slurm_list_pending_jobs(tmp_path, fake_landmarks, capsys):
    out = str(tmp_path / "sw")
    argv = ["--task", "landmarks", "--config", LM_CONFIG, "--grid", "lr=1e-3,2e-3,epochs=1,2,3", "--out", out,
            "--launch", "torchrun --nproc_per_node=2 -m", "data.root=/nowhere"]
    sweep.main(argv + ["--emit", "shell"])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == 6
    train, val = (shlex.split(part) for part in lines[0].split(" && "))
    assert train[:4] == ["torchrun", "--nproc_per_node=2", "-m", "landmarks.train"]
    assert val[1].endswith("scripts/sweep_val.py") and "--keys" in val and val[-2:] == ["--out", train[-1][4:] + "/val.json"]
    sweep.main(argv + ["--emit", "slurm"])
    assert "--array=0-5" in open(f"{out}/sweep.sbatch").read()
    assert len(open(f"{out}/jobs.txt").read().splitlines()) == 6


def test_landmarks_validation_score_matches_the_task_evaluation(tmp_path, synthetic_root):
    """The held-out score is landmarks' own NME: on the whole train split it equals landmarks.eval's."""
    import torch
    from common.backbone import Backbone
    from common.checkpoint import save_checkpoint
    from common.config import load_config
    from landmarks import eval as lm_eval
    from landmarks.heatmap_head import LandmarkModel
    torch.manual_seed(0)
    cfg = load_config(LM_CONFIG, [f"data.root={synthetic_root}/300W"])
    model = LandmarkModel(Backbone("resnet18"), 68, 256)
    ckpt = str(tmp_path / "m.pth")
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict()})
    keys = sweep_tasks.landmarks_keys(cfg)
    value, metric, lower = sweep_tasks.landmarks_score(cfg, ckpt, keys=list(keys))
    ref = lm_eval.main(*lm_eval.parse(["--config", LM_CONFIG, "--checkpoint", ckpt, "--split", "train", "--out",
                                       str(tmp_path / "ev"), f"data.root={synthetic_root}/300W"]))
    assert (metric, lower) == ("nme_io", True)
    assert value == pytest.approx(ref["splits"]["train"]["nme_io"])
    part, _, _ = sweep_tasks.landmarks_score(cfg, ckpt, keys=list(keys)[:2])
    assert part != pytest.approx(value)
