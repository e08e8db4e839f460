"""Batch-size equivalence of one SwAV step (paper App. A.1: the 4096 batch is spread over 64 GPUs):
the same global batch of B samples gives the same loss and the same gradients on 1, 2 and 4 gloo
processes, with and without a queue, because Sinkhorn normalises over all ranks' columns
(pretrain/swav.py). A per-process Sinkhorn gives another loss (checked), so the test can fail.

GroupNorm replaces the projection head's BatchNorm (as model.norm=group does in pretrain.train):
per-process BatchNorm statistics would differ by construction.
"""
import os

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from pretrain.swav import EmbeddingQueue, SwAVModel, swav_loss
from pretrain.train import replace_batchnorm

B, QUEUE, DIM, K = 8, 8, 4, 6


class _TinyBackbone(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _model():
    torch.manual_seed(0)
    model = replace_batchnorm(SwAVModel(_TinyBackbone(), hidden_dim=128, out_dim=DIM, n_prototypes=K))
    model.normalize_prototypes()
    return model


def _inputs():
    """Global multi-crop batch (2 crops of 8 px, 2 of 4 px) and a global queue of embeddings."""
    g = torch.Generator().manual_seed(1)
    colour = torch.randn(B, 3, 1, 1, generator=g)  # per-sample offsets: distinct embeddings
    crops = [colour + torch.randn(B, 3, s, s, generator=g) for s in (8, 8, 4, 4)]
    queue = nn.functional.normalize(torch.randn(2, QUEUE, DIM, generator=g), dim=2)
    return crops, queue


def _step(rank, world, use_queue):
    """This rank's share of one step: (global mean loss, summed gradients of the global mean)."""
    model = _model()
    crops, queue_rows = _inputs()
    b = B // world
    local = [c[rank * b:(rank + 1) * b] for c in crops]
    queue = None
    if use_queue:
        length = QUEUE // world
        queue = EmbeddingQueue(2, length, DIM, device="cpu", rank=rank, world_size=world)
        queue.buffer.copy_(queue_rows[:, rank * length:(rank + 1) * length])
        queue.filled = length
    loss, _ = swav_loss(model, local, queue, prototypes=model.prototypes.weight, crops_for_assign=(0, 1),
                        temperature=0.1, epsilon=0.05, sinkhorn_iters=3)
    (loss * b / B).backward()  # this rank's part of the global mean
    total = loss.detach() * b / B
    grads = [p.grad.clone() for p in model.parameters()]
    if world > 1:
        for t in [total] + grads:
            tdist.all_reduce(t)
    return total, grads


def _worker(rank, world, init_file, out_dir):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = {str(q): _step(rank, world, q) for q in (False, True)}
        torch.save(result, os.path.join(out_dir, f"w{world}_r{rank}.pt"))
    finally:
        tdist.destroy_process_group()


def _run(world, tmp_path):
    mp.start_processes(_worker, args=(world, str(tmp_path / f"store{world}"), str(tmp_path)), nprocs=world,
                       start_method="fork")
    return [torch.load(tmp_path / f"w{world}_r{r}.pt", weights_only=True) for r in range(world)]


@pytest.mark.parametrize("use_queue", [False, True])
def test_local_sinkhorn_would_differ(use_queue):
    """The control: four per-process Sinkhorns (each a world of 1) give another loss than one
    global Sinkhorn, so equality across world sizes below is evidence of the all-reduces."""
    reference, _ = _step(0, 1, use_queue)
    model = _model()
    crops, queue_rows = _inputs()
    losses = []
    for r in range(4):
        queue = None
        if use_queue:
            queue = EmbeddingQueue(2, QUEUE // 4, DIM, device="cpu")
            queue.buffer.copy_(queue_rows[:, r * 2:(r + 1) * 2])
            queue.filled = QUEUE // 4
        losses.append(swav_loss(model, [c[r * 2:(r + 1) * 2] for c in crops], queue,
                                prototypes=model.prototypes.weight)[0].item())
    assert abs(np.mean(losses) - reference.item()) > 1e-3


def test_one_two_and_four_ranks_give_the_same_loss_and_gradients(tmp_path):
    reference = {str(q): _step(0, 1, q) for q in (False, True)}
    assert abs(reference["False"][0].item() - reference["True"][0].item()) > 1e-4  # the queue matters
    for world in (2, 4):
        for rank, result in enumerate(_run(world, tmp_path)):
            for key, (loss, grads) in result.items():
                ref_loss, ref_grads = reference[key]
                assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-6), (world, rank, key)
                assert len(grads) == len(ref_grads) == 9  # conv, projection (linear, norm, linear), prototypes
                for g, r in zip(grads, ref_grads):
                    assert r.abs().max() > 0
                    torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())  # float sums
