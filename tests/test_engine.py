"""common.engine, the one downstream training loop: best.pth direction, resume, run identity, bad samples."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from common import distributed, engine
from common.logger import JsonlWriter


class Tiny(nn.Module):
    """A backbone + head regressor with BatchNorm, the shape of every task model."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.backbone(x)).squeeze(1)


class Noisy(torch.utils.data.Dataset):
    """Targets y = x.sum(); an augmentation drawn from the worker's torch RNG; ``bad`` items unreadable."""

    def __init__(self, n=24, bad=()):
        g = torch.Generator().manual_seed(0)
        self.x, self.bad = torch.randn(n, 4, generator=g), set(bad)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i in self.bad:
            return None
        x = self.x[i] + 0.1 * torch.randn(4)
        return {"image": x, "target": self.x[i].sum(), "index": i}


def mse(outputs, batch):
    return ((outputs - batch["target"]) ** 2).mean(), {}


def _fit(tmp_path, epochs, *, dataset=None, validate=None, select=None, identity=None, mode="finetune", seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    engine.configure_adaptation(model, mode)
    loader = engine.make_loader(dataset or Noisy(), batch_size=8, train=True, workers=0, seed=seed)
    optimizer = engine.build_optimizer(model, {"lr": 0.01, "weight_decay": 0.0})
    lrs = engine.lr_values("constant", base_lr=0.01, epochs=epochs, iters_per_epoch=len(loader))  # same in 1 or 3
    result = engine.fit(model, loader, optimizer, lrs, mse, info=distributed.init(), out_dir=str(tmp_path),
                        epochs=epochs, mode=mode, amp=False, seed=seed, config={"run": "test"},
                        writer=JsonlWriter(str(tmp_path / "log.jsonl")), validate=validate, select=select,
                        identity=identity)
    return model, result


def _epoch_records(path):
    return [r for r in map(json.loads, open(path)) if "time_s" in r]


@pytest.mark.parametrize("metric, values, best_epoch", [("nme_io", [3.0, 1.0, 2.0, 1.5], 2),
                                                        ("icc_mean", [0.2, 0.1, 0.5, 0.4], 3)])
def test_best_checkpoint_follows_the_metrics_declared_direction(tmp_path, metric, values, best_epoch):
    scores = iter(values)
    model, result = _fit(tmp_path, 4, validate=lambda net: {metric: next(scores)}, select=metric)
    assert result.checkpoint.endswith("best.pth") and result.best["epoch"] == best_epoch
    assert torch.load(result.checkpoint, weights_only=True)["epoch"] == best_epoch
    assert [r[f"val_{metric}"] for r in _epoch_records(tmp_path / "log.jsonl")] == values


def test_a_metric_without_a_declared_direction_is_refused():
    with pytest.raises(KeyError, match="LOWER_IS_BETTER"):
        engine.Best("nme_made_up")
    assert engine.Best("nme_io").lower and not engine.Best("icc_mean").lower


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    """Order, augmentation (torch RNG in __getitem__) and Adam state: 3 epochs = 1 epoch + resume to 3."""
    whole, _ = _fit(tmp_path / "a", 3)
    _fit(tmp_path / "b", 1)
    resumed, _ = _fit(tmp_path / "b", 3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    losses = [[r["loss"] for r in _epoch_records(tmp_path / run / "log.jsonl")] for run in "ab"]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert {"event": "resume", "epoch": 1} in map(json.loads, open(tmp_path / "b" / "log.jsonl"))


def test_a_last_pth_of_another_run_is_refused(tmp_path):
    _fit(tmp_path, 1, identity={"classes": ["a", "b"]})
    with pytest.raises(ValueError, match="saved by another run .classes differ"):
        _fit(tmp_path, 2, identity={"classes": ["a", "c"]})


def test_unreadable_samples_are_dropped_and_counted(tmp_path):
    batch = engine.collate_readable([{"x": torch.ones(1), "valid": True}, None, {"x": torch.zeros(1), "valid": False}])
    assert batch["skipped"] == 2 and batch["x"].tolist() == [[1.0]]
    assert engine.collate_readable([None, None]) == {"skipped": 2}
    _, result = _fit(tmp_path, 1, dataset=Noisy(bad=range(8)))                 # a whole batch of them too
    assert result.skipped_images == 8
    assert _epoch_records(tmp_path / "log.jsonl")[0]["skipped_images"] == 8


def test_linear_mode_leaves_the_backbone_and_its_bn_statistics_alone(tmp_path):
    torch.manual_seed(0)
    start = Tiny().state_dict()
    model, _ = _fit(tmp_path, 1, mode="linear")
    after = model.state_dict()
    assert all(torch.equal(start[k], after[k]) for k in start if k.startswith("backbone."))
    assert not torch.equal(start["head.weight"], after["head.weight"])


def test_non_finite_loss_names_the_step(tmp_path):
    def nan_loss(outputs, batch):
        return outputs.sum() * float("nan"), {}
    model = Tiny()
    loader = engine.make_loader(Noisy(), batch_size=8, train=True, workers=0, seed=0)
    with pytest.raises(FloatingPointError, match="epoch 1, iteration 0"):
        engine.train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), [0.1] * 3, 0, nan_loss,
                               device=torch.device("cpu"), mode="finetune", amp=False, epoch=0, seed=0, writer=None)


def test_schedules_warm_up_then_follow_their_shape():
    np.testing.assert_allclose(engine.lr_values("constant", base_lr=1.0, epochs=4, iters_per_epoch=2,
                                                warmup_epochs=2), [0, 1 / 3, 2 / 3, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(engine.lr_values("step", base_lr=1.0, epochs=4, iters_per_epoch=1,
                                                milestones=[0.5], gamma=0.1), [1, 1, 0.1, 0.1])
    cosine = engine.lr_values("cosine", base_lr=1.0, final_lr=0.5, epochs=2, iters_per_epoch=2)
    assert cosine[0] == 1.0 and cosine[-1] > 0.5 and np.all(np.diff(cosine) < 0)
    with pytest.raises(ValueError, match="optim.schedule"):
        engine.lr_values("linear", base_lr=1.0, epochs=1, iters_per_epoch=1)


def test_optimizer_gives_the_backbone_its_relative_lr():
    model = Tiny()
    opt = engine.build_optimizer(model, {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                                         "backbone_lr_mult": 0.1})
    assert isinstance(opt, torch.optim.SGD)
    assert sorted(g["lr_mult"] for g in opt.param_groups) == [0.1, 1.0]
    with pytest.raises(ValueError, match="optim.name"):
        engine.build_optimizer(model, {"name": "lamb", "lr": 0.1, "weight_decay": 0.0})
