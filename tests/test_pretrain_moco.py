"""MoCo-v2 (pretrain/moco.py): momentum update, InfoNCE by hand, ring-buffer queue, state round trip."""
import math

import pytest
import torch
from torch import nn

from pretrain.moco import MoCoModel, MomentumContrast, moco_loss


class _TinyBackbone(nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def _moco(queue_size=5, momentum=0.9, temperature=0.5):
    torch.manual_seed(0)
    model = MoCoModel(_TinyBackbone(), hidden_dim=8, out_dim=2)
    return model, MomentumContrast(model, queue_size=queue_size, momentum=momentum, temperature=temperature,
                                   generator=torch.Generator().manual_seed(1))


def test_momentum_update_is_an_ema_of_the_query_parameters():
    model, contrast = _moco(momentum=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in contrast.key_model.parameters()]
    contrast.update(model)
    for pk, pk0, pq in zip(contrast.key_model.parameters(), before, model.parameters()):
        assert torch.allclose(pk, 0.9 * pk0 + 0.1 * pq, atol=1e-6)
        assert not pk.requires_grad


def test_info_nce_by_hand():
    _, contrast = _moco(queue_size=2, temperature=0.5)
    contrast.queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    logits = [0.6 / 0.5, 0.0, -1.0 / 0.5]  # positive first, then the queue
    expected = -(logits[0] - math.log(sum(math.exp(v) for v in logits)))
    assert contrast.loss(q, k).item() == pytest.approx(expected, rel=1e-6)


def test_enqueue_wraps_around():
    _, contrast = _moco(queue_size=5)
    contrast.queue = torch.zeros(5, 2)
    contrast.ptr = 3
    contrast.enqueue(torch.arange(1.0, 5.0)[:, None].repeat(1, 2))
    assert contrast.queue[:, 0].tolist() == [3, 4, 0, 1, 2]
    assert contrast.ptr == 2


def test_step_backward_enqueue_and_state_round_trip():
    model, contrast = _moco(queue_size=6)
    crops = [torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in (2, 3)]
    queue0 = contrast.queue.clone()
    loss, q = moco_loss(model, contrast, crops, model)
    assert q.shape == (3, contrast.queue.shape[1])  # the query embeddings, for the collapse guard
    loss.backward()  # the loss must not hold the queue that enqueue() overwrote
    assert model.backbone.conv.weight.grad is not None
    assert torch.allclose(contrast.queue[:3], contrast.keys(crops[1]), atol=1e-6)
    assert torch.equal(contrast.queue[3:], queue0[3:]) and contrast.ptr == 3
    _, other = _moco(queue_size=6)
    other.load_state_dict(contrast.state_dict())
    assert torch.equal(other.queue, contrast.queue) and other.ptr == 3
    for a, b in zip(other.key_model.state_dict().values(), contrast.key_model.state_dict().values()):
        assert torch.equal(a, b)
    _, small = _moco(queue_size=4)
    with pytest.raises(ValueError, match="queue shape"):
        small.load_state_dict(contrast.state_dict())
