"""Collapse guard (pretrain/collapse.py)."""
import math

import pytest
import torch

from pretrain.collapse import CollapseGuard, collapse_value, embedding_spread


def test_embedding_spread_is_zero_for_one_point_and_one_for_a_centred_cloud():
    one_point = torch.nn.functional.normalize(torch.ones(8, 4), dim=1)
    assert float(embedding_spread(one_point)) == pytest.approx(0.0, abs=1e-6)
    centred = torch.cat([torch.eye(4), -torch.eye(4)])  # unit vectors whose mean is 0
    assert float(embedding_spread(centred)) == pytest.approx(1.0)
    half = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean (0.5, 0.5): sqrt(1 - 0.5)
    assert float(embedding_spread(half)) == pytest.approx(math.sqrt(0.5))


def test_collapse_values():
    assert collapse_value("swav", n_prototypes=3000) == pytest.approx(math.log(3000))
    assert collapse_value("moco", queue_size=65536) == pytest.approx(math.log(65537))


def test_loss_pinned_at_ln_k_stops_after_patience_with_the_remedies():
    ln_k = math.log(32)
    guard = CollapseGuard("swav", ln_k, tol=0.01, min_spread=0.05, patience=3)
    assert guard.stop
    assert guard.update(ln_k, 0.5) is None and guard.update(ln_k + 0.005, 0.5) is None
    assert guard.update(ln_k + 0.5, 0.5) is None  # the streak breaks
    assert guard.update(ln_k, 0.5) is None and guard.update(ln_k, 0.5) is None
    message = guard.update(ln_k - 0.001, 0.5)
    assert guard.collapsed and "swav collapsed" in message and "for 3 steps" in message
    for remedy in ("swav.queue_length", "swav.n_prototypes", "optim.lr", "swav.epsilon", "aug.crop_scales"):
        assert remedy in message
    assert guard.update(ln_k, 0.5) is None  # said once


def test_spread_near_zero_is_a_collapse_and_warn_keeps_going():
    guard = CollapseGuard("moco", math.log(257), tol=0.01, min_spread=0.05, patience=2, on_collapse="warn")
    assert guard.update(1.0, 0.01) is None
    message = guard.update(1.2, 0.02)
    assert "moco collapsed" in message and "spread" in message and "moco.queue_size" in message
    assert not guard.stop and guard.collapsed


def test_patience_zero_never_fires_and_bad_policy_raises():
    guard = CollapseGuard("swav", 1.0, tol=0.01, min_spread=0.05, patience=0)
    assert all(guard.update(1.0, 0.0) is None for _ in range(10))
    with pytest.raises(ValueError, match="on_collapse"):
        CollapseGuard("swav", 1.0, tol=0.01, min_spread=0.05, patience=1, on_collapse="ignore")
