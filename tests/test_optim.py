"""Tests for common.optim: LARS steps against hand-computed numbers, schedules, param groups."""
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from common.optim import LARS, constant_schedule, cosine_schedule, param_groups, set_lr, step_schedule


def _param(values, grad):
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


@pytest.mark.parametrize("wd, expected", [
    # ||p|| = 5, ||g|| = 2. wd 0.1: a = 0.001*5/(2 + 0.1*5) = 0.002, d = 0.002*([0,2] + 0.1*[3,4])
    # = [0.0006, 0.0048], p <- p - 0.5 d = [2.9997, 3.9976].
    (0.1, [2.9997, 3.9976]),
    # wd 0: a = 0.001*5/2 = 0.0025, d = [0, 0.005], p <- [3, 3.9975].
    (0.0, [3.0, 3.9975]),
])
def test_lars_step_matches_hand_computation(wd, expected):
    p = _param([3.0, 4.0], [0.0, 2.0])
    opt = LARS([p], lr=0.5, momentum=0.9, weight_decay=wd)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)


def test_lars_momentum_and_zero_gradient():
    p = _param([3.0, 4.0], [0.0, 2.0])
    opt = LARS([p], lr=0.5, momentum=0.9, weight_decay=0.1)
    opt.step()  # buf = [0.0006, 0.0048], p = [2.9997, 3.9976]
    p.grad.zero_()  # ||g|| = 0: a = 1 and no weight decay, so d = 0 and buf = 0.9 buf
    opt.step()  # p = [2.9997 - 0.5*0.9*0.0006, 3.9976 - 0.5*0.9*0.0048] = [2.99943, 3.99544]
    torch.testing.assert_close(p.detach(), torch.tensor([2.99943, 3.99544], dtype=torch.float64),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"],
                               torch.tensor([0.00054, 0.00432], dtype=torch.float64), rtol=1e-8, atol=0)


def test_lars_zero_norm_parameter_takes_plain_sgd_step():
    # ||p|| = 0 (a BN bias at init): LARC leaves the gradient alone (a = 1, no weight decay), so
    # p <- 0 - 0.5 * [1, 2, 2]. A naive LARS ratio 0.001*0/3 would not move it at all.
    zero = _param([0.0, 0.0, 0.0], [1.0, 2.0, 2.0])
    other = _param([0.0, 3.0, 4.0], [0.0, 0.0, 2.0])  # ||p||=5, ||g||=2, wd 0.1 -> d=[0,0.0006,0.0048]
    LARS([zero, other], lr=0.5, momentum=0.9, weight_decay=0.1).step()
    torch.testing.assert_close(zero.detach(), torch.tensor([-0.5, -1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(other.detach(), torch.tensor([0.0, 2.9997, 3.9976], dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_lars_state_dict_round_trip():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 3)
    opt_a = LARS(a.parameters(), lr=0.3, weight_decay=1e-2)
    for _ in range(2):
        opt_a.zero_grad()
        a(x).square().sum().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    opt_b = LARS(b.parameters(), lr=0.3, weight_decay=1e-2)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_cosine_schedule_values():
    # warm-up linspace(0.5, 2.0, 4) = [0.5, 1.0, 1.5, 2.0]; cosine over n=8 iterations:
    # 0.2 + 0.9 (1 + cos(pi t / 8)), t = 0..7.
    s = cosine_schedule(2.0, 0.2, epochs=3, iters_per_epoch=4, warmup_epochs=1, start_warmup_value=0.5)
    assert s.shape == (12,) and s.dtype == np.float64
    np.testing.assert_allclose(s[:4], [0.5, 1.0, 1.5, 2.0])  # iteration 0 .. end of warm-up
    assert s[4] == pytest.approx(2.0)  # t = 0
    assert s[6] == pytest.approx(0.2 + 0.9 * (1 + math.sqrt(0.5)))  # t = 2: 1.7363961
    assert s[8] == pytest.approx(1.1)  # middle of the cosine, t = 4
    assert s[11] == pytest.approx(0.2685084207)  # last, t = 7: 0.2 + 0.9 (1 + cos(7 pi / 8))


def test_cosine_schedule_without_warmup_and_paper_recipe():
    s = cosine_schedule(1.0, 0.0, epochs=2, iters_per_epoch=2)
    np.testing.assert_allclose(s, [1.0, 0.8535533906, 0.5, 0.1464466094])
    # App. A.1: 200 epochs, lr 4.8 -> 0.045, 10 warm-up epochs (10 iterations per epoch here).
    s = cosine_schedule(4.8, 0.045, epochs=200, iters_per_epoch=10, warmup_epochs=10, start_warmup_value=0.3)
    assert len(s) == 2000 and s[0] == 0.3 and s[99] == pytest.approx(4.8) and s[100] == pytest.approx(4.8)
    assert s[-1] == pytest.approx(0.045 + 2.3775 * (1 - math.cos(math.pi / 1900)))
    assert np.all(np.diff(s[100:]) < 0)


def test_step_and_constant_schedules():
    s = step_schedule(1.0, [2, 3], 0.1, epochs=4, iters_per_epoch=2, warmup_epochs=1)
    np.testing.assert_allclose(s, [0.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    np.testing.assert_allclose(step_schedule(0.5, [1], 0.5, epochs=2, iters_per_epoch=3),
                               [0.5, 0.5, 0.5, 0.25, 0.25, 0.25])
    np.testing.assert_array_equal(constant_schedule(0.3, epochs=2, iters_per_epoch=3), [0.3] * 6)
    with pytest.raises(ValueError, match="warm-up"):
        cosine_schedule(1.0, 0.0, epochs=1, iters_per_epoch=4, warmup_epochs=2)
    with pytest.raises(ValueError, match="milestones"):
        step_schedule(1.0, [0], 0.1, epochs=2, iters_per_epoch=2)


class _TaskModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False))
        self.head = nn.Linear(4, 2)
        self.backbone[2].weight.requires_grad_(False)  # a frozen layer is left out


class _Wrapped(nn.Module):  # names like DDP's: "module.backbone.0.weight"
    def __init__(self, inner):
        super().__init__()
        self.module = inner


@pytest.mark.parametrize("wrap", [False, True])
def test_param_groups_with_no_decay(wrap):
    model = _TaskModel()
    groups = param_groups(_Wrapped(model) if wrap else model, weight_decay=1e-4, backbone_lr_mult=0.1,
                          no_decay_norm_bias=True)
    by_name = {g["name"]: g for g in groups}
    bb, bn, head = model.backbone[0], model.backbone[1], model.head
    expected = {"head": ([head.weight], 1e-4, 1.0),
                "head_no_decay": ([head.bias], 0.0, 1.0),
                "backbone": ([bb.weight], 1e-4, 0.1),
                "backbone_no_decay": ([bb.bias, bn.weight, bn.bias], 0.0, 0.1)}
    assert set(by_name) == set(expected)
    for name, (params, wd, mult) in expected.items():
        assert [id(p) for p in by_name[name]["params"]] == [id(p) for p in params], name
        assert (by_name[name]["weight_decay"], by_name[name]["lr_mult"]) == (wd, mult), name
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)


def test_param_groups_default_and_set_lr():
    model = _TaskModel()
    groups = param_groups(model, weight_decay=1e-6, backbone_lr_mult=0.01)
    assert [(g["name"], g["weight_decay"], g["lr_mult"], len(g["params"])) for g in groups] == \
        [("head", 1e-6, 1.0, 2), ("backbone", 1e-6, 0.01, 4)]
    opt = LARS(groups, lr=1.0)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.005]
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)  # no lr_mult key: multiplier 1
    set_lr(sgd, 0.25)
    assert sgd.param_groups[0]["lr"] == 0.25
    set_lr(sgd, np.float64(0.125))  # schedules are numpy arrays; the state must stay plain floats
    assert type(sgd.param_groups[0]["lr"]) is float and sgd.param_groups[0]["lr"] == 0.125
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(frozen, weight_decay=0.0)
