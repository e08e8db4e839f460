"""SwAV maths (pretrain/swav.py): Sinkhorn marginals and numerics, swapped-prediction loss by hand,
the queue, prototype normalisation and freezing (through train.backward_step)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.optim import LARS
from pretrain.swav import (EmbeddingQueue, SwAVModel, assignment_codes, check_epsilon, sinkhorn,
                           swapped_prediction_loss)
from pretrain.train import backward_step


def _cosine_scores(b, k, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


def _numpy_sinkhorn(scores, eps, n_iters):
    """Reference in float64, written from the algorithm's description: rows (prototypes) to 1/K,
    then columns (samples) to 1/B, repeated; columns scaled to sum 1 at the end."""
    q = np.exp(scores.astype(np.float64) / eps).T  # K x B
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_matches_reference_and_marginals_at_swav_scale():
    scores = _cosine_scores(256, 3000, d=128)  # the bs256 recipe's per-step problem
    q = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert q.dtype == torch.float32 and q.shape == (256, 3000)
    np.testing.assert_allclose(q.numpy(), _numpy_sinkhorn(scores.numpy(), 0.05, 3), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(256), atol=1e-5)  # each sample: a distribution
    mass = q.sum(0).numpy()  # per prototype: B / K within 0.1 % after 3 iterations (anchors §2.2)
    assert np.abs(mass / (256 / 3000) - 1).max() < 1e-3


def test_sinkhorn_converges_to_equipartition_of_the_form_diag_u_exp_diag_v():
    scores = _cosine_scores(30, 10, seed=1)
    q = sinkhorn(scores.double(), epsilon=0.1, n_iters=2000).double()
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(10, 3.0), rtol=1e-4)  # B/K per prototype
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(30), rtol=1e-6)
    # entropic OT solution: log q - S / eps = a_b + c_k (a sum of a per-sample and a per-prototype term)
    r = (torch.log(q) - scores.double() / 0.1).numpy()
    r = r - r.mean(1, keepdims=True) - r.mean(0, keepdims=True) + r.mean()
    assert np.abs(r).max() < 1e-4  # float32 inside sinkhorn


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_sinkhorn_is_finite_for_extreme_scores_under_autocast(amp_dtype):
    assert torch.isinf(torch.exp(torch.tensor(1 / 0.05, dtype=torch.float16)))  # why fp32 is needed
    g = torch.Generator().manual_seed(3)
    scores = (torch.randint(0, 2, (64, 30), generator=g) * 2 - 1).to(torch.float16)  # +-1
    with torch.autocast("cpu", dtype=amp_dtype):
        q = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(64), atol=1e-5)
    np.testing.assert_allclose(q.numpy(), _numpy_sinkhorn(scores.float().numpy(), 0.05, 3), rtol=1e-3, atol=1e-6)


def test_epsilon_guard():
    check_epsilon(0.03)
    with pytest.raises(ValueError, match="overflows float32"):
        check_epsilon(0.01)


def _ce(q, s, t):
    """-sum_k q_k log softmax(s / t)_k, by hand."""
    lse = math.log(sum(math.exp(v / t) for v in s))
    return -sum(qk * (sk / t - lse) for qk, sk in zip(q, s))


def test_swapped_prediction_two_crops_by_hand():
    s0, s1 = [0.2, -0.1], [-0.3, 0.4]
    q0, q1 = [0.7, 0.3], [0.25, 0.75]
    loss = swapped_prediction_loss([torch.tensor([s0]), torch.tensor([s1])],
                                   {0: torch.tensor([q0]), 1: torch.tensor([q1])}, temperature=0.1)
    expected = (_ce(q0, s1, 0.1) + _ce(q1, s0, 0.1)) / 2  # (l(z1, q0) + l(z0, q1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(3.59975, abs=1e-5)


def test_swapped_prediction_three_crops_one_code_by_hand():
    s = [[0.5, 0.0, -0.5], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]]
    q0 = [0.2, 0.3, 0.5]
    loss = swapped_prediction_loss([torch.tensor([v]) for v in s], {0: torch.tensor([q0])}, temperature=0.5)
    assert loss.item() == pytest.approx((_ce(q0, s[1], 0.5) + _ce(q0, s[2], 0.5)) / 2, rel=1e-6)


def test_queue_fifo_full_and_state_round_trip():
    queue = EmbeddingQueue(1, 3, 2, device="cpu")
    a, b = torch.tensor([[1.0, 0], [2, 0]]), torch.tensor([[3.0, 0], [4, 0]])
    queue.push([a])
    assert not queue.full and queue.filled == 2
    queue.push([b])
    assert queue.full
    assert queue.buffer[0, :, 0].tolist() == [3, 4, 1]  # newest first, oldest dropped
    other = EmbeddingQueue(1, 3, 2, device="cpu")
    assert other.load_state_dict(queue.state_dict()) and other.full
    assert torch.equal(other.buffer, queue.buffer)
    assert not EmbeddingQueue(1, 4, 2, device="cpu").load_state_dict(queue.state_dict())


def test_assignment_codes_use_the_queue_only_when_full():
    protos = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    emb = [F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(i)), dim=1) for i in (1, 2)]
    scores = [e @ protos.t() for e in emb]
    queue = EmbeddingQueue(2, 3, 4, device="cpu")
    codes = assignment_codes(scores, emb, protos, queue, epsilon=0.05, n_iters=3)
    assert torch.allclose(codes[0], sinkhorn(scores[0], epsilon=0.05, n_iters=3))  # not full: no queue
    assert queue.full and torch.equal(queue.buffer[1], emb[1])
    new = [F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(i)), dim=1) for i in (3, 4)]
    codes = assignment_codes([e @ protos.t() for e in new], new, protos, queue, epsilon=0.05, n_iters=3)
    full = sinkhorn(torch.cat([emb[1] @ protos.t(), new[1] @ protos.t()]), epsilon=0.05, n_iters=3)
    assert torch.allclose(codes[1], full[3:], atol=1e-6)
    assert not torch.allclose(codes[1], sinkhorn(new[1] @ protos.t(), epsilon=0.05, n_iters=3), atol=1e-3)


class _TinyBackbone(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def _model():
    torch.manual_seed(0)
    return SwAVModel(_TinyBackbone(), hidden_dim=16, out_dim=4, n_prototypes=5)


def _crops():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 12, 12, generator=g), torch.randn(6, 3, 12, 12, generator=g),
            torch.randn(6, 3, 8, 8, generator=g)]


def test_forward_groups_crops_by_size_and_matches_per_crop_forward():
    model, crops = _model().eval(), _crops()
    emb, scores = model(crops)
    per_crop = torch.cat([model([c])[0] for c in crops])  # one crop at a time
    assert emb.shape == (18, 4) and scores.shape == (18, 5)
    assert torch.allclose(emb, per_crop, atol=1e-6)
    assert torch.allclose(emb.norm(dim=1), torch.ones(18), atol=1e-6)


def _swav_step(model, opt, freeze):
    model.normalize_prototypes()
    emb, scores = model(_crops())
    w = model.prototypes.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(5), atol=1e-6)  # unit prototypes at every forward
    assert scores.abs().max() <= 1 + 1e-6  # cosine scores
    scores = list(scores.split(6))
    codes = {i: sinkhorn(scores[i], epsilon=0.05) for i in (0, 1)}
    loss = swapped_prediction_loss(scores, codes, 0.1)
    backward_step(model, opt, torch.amp.GradScaler("cpu", enabled=False), loss, freeze_prototypes=freeze)


def test_prototypes_unit_norm_every_step_and_freeze_drops_their_gradient():
    model = _model().train()
    opt = LARS(model.parameters(), lr=5.0, weight_decay=1e-6)
    for _ in range(2):  # frozen: the optimiser skips them (no momentum, no decay)
        model.normalize_prototypes()
        before = model.prototypes.weight.detach().clone()
        conv_before = model.backbone.conv.weight.detach().clone()
        _swav_step(model, opt, freeze=True)
        assert model.prototypes.weight.grad is None
        assert torch.allclose(model.prototypes.weight, before, atol=1e-7)  # re-normalising only
        assert not torch.equal(model.backbone.conv.weight, conv_before)
    assert model.prototypes.weight not in opt.state or not opt.state[model.prototypes.weight]
    for _ in range(3):  # unfrozen: they move off the sphere, and are re-normalised before the forward
        before = model.prototypes.weight.detach().clone()
        _swav_step(model, opt, freeze=False)
        assert model.prototypes.weight.grad is not None
        assert not torch.allclose(model.prototypes.weight, before)
    assert not torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(5), atol=1e-4)
    model.normalize_prototypes()
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(5), atol=1e-6)


def test_embeddings_and_scores_are_float32_under_bf16_autocast():
    model, crops = _model().eval(), _crops()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb, scores = model(crops)
    assert emb.dtype == scores.dtype == torch.float32
    assert torch.allclose(scores, emb @ model.prototypes.weight.t(), atol=1e-6)
