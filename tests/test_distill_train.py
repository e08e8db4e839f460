"""Self-distillation runs end to end on the synthetic 300W (paper §3.5, Figs. 3-4): the student moves
toward its teacher, steps chain, outputs, resume in the middle of a step, the figure collector."""
import json
import os

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from common import engine
from common.config import load_config
from common.finetune import select_training_keys
from distill import collect, leakage, pool
from distill import train as distill_train
from distill.data import UnlabelledDataset
from distill.teacher import load_landmark_model
from landmarks import formats
from landmarks import train as landmarks_train
from landmarks.data import LandmarkDataset

SMALL = ["data.input_size=32", "data.heatmap_size=8", "model.head_width=32", "data.fraction=0.5",
         "data.test_splits=[common]", "optim.batch_size=3"]


def _distill_cfg(root, pool_list, teacher, out, *extra):
    return load_config("distill/configs/synthetic.yaml", [
        f"data.root={root}", f"out={out}", f"teacher={teacher}", f"unlabeled.list={pool_list}", *SMALL, *extra])


CHAIN = ["distill.steps=2", "optim.epochs=2", "unlabeled.amount=1.0"]   # pool's first 6 images (the 300W ones)


@pytest.fixture(scope="module")
def setup(synthetic_root, tmp_path_factory):
    """A teacher fine-tuned on half of the synthetic 300W training faces, a pool of the 300W training
    images (detector boxes) + the unlabelled folder (24 images, 3 of them unreadable), and one
    self-distillation step of 3 epochs (33 iterations) over the 3 labelled + 30 pool images."""
    base = tmp_path_factory.mktemp("distill")
    root = str(synthetic_root / "300W")
    landmarks_train.main(load_config("landmarks/configs/synthetic.yaml", [
        f"data.root={root}", f"out={base / 'teacher'}", "data.val_split=", "optim.epochs=4", *SMALL]))
    pool_list = str(base / "pool.txt")
    pool.main(["--out", pool_list, "--dataset", f"300w={root}", "--dataset", f"folder={synthetic_root / 'unlabelled'}"])
    cfg = _distill_cfg(root, pool_list, base / "teacher" / "last.pth", base / "runs" / "one",
                       "distill.steps=1", "optim.epochs=3")
    return base, root, pool_list, cfg, distill_train.main(cfg)


@pytest.fixture(scope="module")
def chained(setup):
    """Two steps of 2 epochs on the 300W part of the pool; records the teacher of each step."""
    base, root, pool_list, _, _ = setup
    seen, real = [], distill_train.teacher_targets

    def spy(teacher, **kwargs):
        seen.append(teacher.head.out.weight.detach().clone())
        return real(teacher, **kwargs)
    cfg = _distill_cfg(root, pool_list, base / "teacher" / "last.pth", base / "runs" / "chain", *CHAIN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill_train, "teacher_targets", spy)
        results = distill_train.main(cfg)
    return cfg, results, seen


def _crops(cfg, pool_list):
    """The run's training crops without augmentation, as one batch."""
    samples = formats.load_split("300w", cfg.data.root, "train")
    labelled = samples.select(select_training_keys(samples.keys, fraction=cfg.data.fraction,
                                                   seed=cfg.data.subset_seed, subset_file="", out_dir=None))
    entries = pool.read_pool(pool_list)
    sets = [LandmarkDataset(labelled, input_size=32, box_scale=1.25),
            UnlabelledDataset(entries.paths, entries.boxes, n_points=68, input_size=32, box_scale=1.25)]
    batch = next(iter(DataLoader(ConcatDataset(sets), batch_size=100)))
    return batch["image"][batch["valid"]]


@torch.no_grad()
def _mse(a, b, images):
    return float((a.eval()(images) - b.eval()(images)).pow(2).mean())


def test_one_step_moves_the_student_toward_the_teacher(setup):
    base, root, pool_list, cfg, results = setup
    images = _crops(cfg, pool_list)
    teacher, _ = load_landmark_model(str(base / "teacher" / "last.pth"))
    before = distill_train.make_student(arch="resnet18", init="scratch", n_points=68, head_width=32,
                                        seed=cfg.seed * 1000 + 1)            # step 1's student at its start
    after, _ = load_landmark_model(os.path.join(cfg.out, "step_1.pth"))
    mse_before, mse_after = _mse(before, teacher, images), _mse(after, teacher, images)
    assert mse_after < 0.5 * mse_before, (mse_before, mse_after)
    log = [json.loads(line) for line in open(os.path.join(cfg.out, "log.jsonl"))]
    losses = [r["loss"] for r in log if "time_s" in r]                       # the epoch records
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]                   # the distillation loss falls


def test_run_outputs_and_teacher_score(setup):
    base, root, pool_list, cfg, results = setup
    teacher_run = json.load(open(base / "teacher" / "metrics.json"))
    assert results["teacher"]["splits"]["common"]["nme_io"] == pytest.approx(
        teacher_run["splits"]["common"]["nme_io"], abs=1e-9)                   # same model, same scoring
    assert results["n_labelled"] == 3 and results["reference_size"] == 6
    assert results["n_unlabelled"] == 6 + 24 and results["unreadable_images"] == 3
    assert [s["step"] for s in results["steps"]] == [1] and results["splits"] == results["steps"][0]["splits"]
    assert all(os.path.isfile(os.path.join(cfg.out, f)) for f in
               ("config.yaml", "log.jsonl", "last.pth", "metrics.json", "step_1.pth", "steps.json", "subset_keys.txt"))


def test_each_step_is_taught_by_the_previous_student(setup, chained):
    base = setup[0]
    cfg, results, seen = chained
    first = torch.load(base / "teacher" / "last.pth", weights_only=True)["model"]["head.out.weight"]
    step1 = torch.load(os.path.join(cfg.out, "step_1.pth"), weights_only=True)["model"]
    assert len(seen) == 2 and torch.equal(seen[0], first) and torch.equal(seen[1], step1["head.out.weight"])
    last = torch.load(os.path.join(cfg.out, "last.pth"), weights_only=True)
    step2 = torch.load(os.path.join(cfg.out, "step_2.pth"), weights_only=True)["model"]
    assert last["step"] == 2 and last["epoch"] == 2 and all(torch.equal(last["model"][k], step2[k]) for k in step2)
    assert results["n_unlabelled"] == 6 and results["amount"] == 1.0 and results["unreadable_images"] == 0
    log = [json.loads(line) for line in open(os.path.join(cfg.out, "log.jsonl"))]
    assert [(r["step"], r["epoch"]) for r in log if "time_s" in r] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [r["step"] for r in log if "test" in r] == [1, 2]


def test_resume_in_the_middle_of_a_step(setup, chained, tmp_path, monkeypatch):
    """Interrupted after step 2's first epoch, the rerun ends with the uninterrupted run's weights."""
    base, root, pool_list, _, _ = setup
    cfg, results, _ = chained
    out = tmp_path / "resumed"
    calls, real = [], engine.train_one_epoch

    def stop_at_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", stop_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        distill_train.main(_distill_cfg(root, pool_list, base / "teacher" / "last.pth", out, *CHAIN))
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 2
    monkeypatch.setattr(engine, "train_one_epoch", real)
    resumed = distill_train.main(_distill_cfg(root, pool_list, base / "teacher" / "last.pth", out, *CHAIN))
    a = torch.load(os.path.join(cfg.out, "last.pth"), weights_only=True)["model"]
    b = torch.load(out / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["splits"] == results["splits"] and resumed["teacher"] == results["teacher"]


def test_leaking_pool_stops_the_run_before_training(setup, tmp_path):
    base, root, pool_list, cfg, results = setup
    leaky = tmp_path / "leaky.txt"
    leaky.write_text(open(pool_list).read() + formats.load_split("300w", root, "challenging").images[0] + "\n")
    with pytest.raises(leakage.LeakageError, match="1 unlabelled image"):
        distill_train.main(_distill_cfg(root, str(leaky), base / "teacher" / "last.pth", tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pth").exists()


def test_collector_tables_and_plots(setup, chained, tmp_path):
    base, root, pool_list, cfg, results = setup
    chain_cfg, chain, _ = chained
    runs = base / "runs"
    collect.main(["--figure", "3", "--runs", str(runs), "--split", "common", "--out", str(tmp_path)])
    collect.main(["--figure", "4", "--runs", str(runs), "--split", "common", "--out", str(tmp_path)])
    assert (tmp_path / "fig3.png").stat().st_size > 0 and (tmp_path / "fig4.png").stat().st_size > 0
    left, right = collect.fig3_rows(collect.load_runs(str(runs)), split="common")
    nme = {name: [s["splits"]["common"]["nme_io"] for s in r["steps"]]
           for name, r in (("one", results), ("chain", chain))}
    teacher = results["teacher"]["splits"]["common"]["nme_io"]
    assert [row[:2] for row in left] == [(100.0, 6), (500.0, 30)]             # unlabelled images as % of 6
    assert [row[3] for row in left] == [nme["chain"][0], nme["one"][0]] and left[0][2] == teacher
    assert right == [("chain", 0, teacher), ("chain", 1, nme["chain"][0]), ("chain", 2, nme["chain"][1])]
    table = (tmp_path / "fig4.md").read_text()
    assert "| scratch | " in table and "50% labels" in table
    assert {r[1] for r in collect.fig4_rows(collect.load_runs(str(runs)), split="common")} == {0.5}
