"""MoCo-v2 (paper §4 Table 1 ablation: SwAV vs MoCo-v2): momentum key encoder, queue of negatives,
InfoNCE.

MoCo: He et al. 2020, https://arxiv.org/abs/1911.05722; v2 (MLP head, T=0.2, blur, cosine lr):
Chen et al. 2020, https://arxiv.org/abs/2003.04297. Reimplemented from the papers.

Batch-norm leak: MoCo shuffles the key batch across GPUs ("shuffle BN") so that a query and its
key never share BN statistics computed on a small per-GPU sub-batch. We use the other standard
remedy, global statistics: on CUDA with several processes both encoders use SyncBatchNorm
(SimCLR's "global BN", MoCo-v3), and in one process the whole batch is one BN batch. The
statistics then come from the whole global batch, so no small group of samples can signal
through them, and no shuffle is needed.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from common.distributed import all_gather_varlen


class MoCoModel(nn.Module):
    """Query encoder: backbone + MLP head (Linear-ReLU-Linear, 2048-2048-128) + L2 norm."""

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Sequential(nn.Linear(backbone.num_features, hidden_dim),
                                        nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit embeddings N x D in float32 (the backbone may run under autocast)."""
        return F.normalize(self.projection(self.backbone(x)).float(), dim=1)


class MomentumContrast:
    """Key encoder (an exponential moving average of the query encoder's parameters) and the
    ring-buffer queue of negative keys, shared by all ranks (keys are all-gathered)."""

    def __init__(self, query_model: nn.Module, *, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, generator: torch.Generator | None = None):
        self.key_model = copy.deepcopy(query_model)
        for p in self.key_model.parameters():
            p.requires_grad_(False)
        self.momentum, self.temperature = momentum, temperature
        dim = query_model.projection[-1].out_features
        device = next(query_model.parameters()).device
        queue = torch.randn(queue_size, dim, generator=generator)  # random unit keys, as in MoCo
        self.queue = F.normalize(queue, dim=1).to(device)
        self.ptr = 0

    @torch.no_grad()
    def update(self, query_model: nn.Module) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (parameters only; BN buffers are the key
        encoder's own running statistics)."""
        for pk, pq in zip(self.key_model.parameters(), query_model.parameters()):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Unit key embeddings N x D (the key encoder runs in train mode: batch BN statistics)."""
        return self.key_model.train()(x)

    def loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """InfoNCE: -log exp(q.k+/T) / (exp(q.k+/T) + sum_queue exp(q.n/T)), mean over N."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k = q.float(), k.float().detach()
            l_pos = (q * k).sum(dim=1, keepdim=True)  # N x 1
            l_neg = q @ self.queue.clone().t()  # N x K (a copy: enqueue() overwrites the queue)
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature  # N x (1 + K)
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        """Replace the oldest entries by every rank's keys (rank order), wrapping around."""
        k = all_gather_varlen(k.float())
        size = self.queue.shape[0]
        idx = (self.ptr + torch.arange(min(k.shape[0], size), device=k.device)) % size
        self.queue[idx] = k[-len(idx):]
        self.ptr = int((self.ptr + k.shape[0]) % size)

    def state_dict(self) -> dict:
        return {"key_model": self.key_model.state_dict(), "queue": self.queue.cpu(), "ptr": self.ptr}

    def load_state_dict(self, state: dict) -> None:
        self.key_model.load_state_dict(state["key_model"], strict=True)
        if state["queue"].shape != self.queue.shape:
            raise ValueError(f"MoCo queue shape {tuple(state['queue'].shape)} in the checkpoint, "
                             f"{tuple(self.queue.shape)} configured")
        self.queue.copy_(state["queue"])
        self.ptr = int(state["ptr"])


def moco_loss(model, contrast: MomentumContrast, crops: list, query_model: nn.Module) -> tuple:
    """One MoCo step's (loss (local mean), query embeddings): momentum update from ``query_model`` (the
    unwrapped model), keys of crop 1, queries of crop 0, InfoNCE against the queue, then enqueue the keys."""
    contrast.update(query_model)
    k = contrast.keys(crops[1])
    q = model(crops[0])
    loss = contrast.loss(q, k)
    contrast.enqueue(k)
    return loss, q
