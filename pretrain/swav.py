"""SwAV maths (paper §3.1 and App. A.1): projection head, prototypes, distributed Sinkhorn-Knopp,
swapped prediction and the embedding queue.

SwAV: Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", https://arxiv.org/abs/2006.09882. Behaviour matched to the reference code as
recorded in /work/shared/research/anchors_frl_swav.md §2.2-2.5 (reimplemented, not copied).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from common.distributed import all_gather_cat, all_reduce_sum

# exp(1/eps) must stay finite in float32 (max ~3.4e38 = e^88.7); cosine scores are in [-1, 1].
_MIN_EPSILON = 1.0 / 88.0


class SwAVModel(nn.Module):
    """Backbone + projection head (Linear-BN-ReLU-Linear, 2048-2048-128) + L2 norm + prototypes.

    Attribute names fix the checkpoint keys: ``backbone.*`` (torchvision names, exportable),
    ``projection.*`` and ``prototypes.weight`` (K x D, no bias).
    """

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 2048, out_dim: int = 128,
                 n_prototypes: int = 3000):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Sequential(
            nn.Linear(backbone.num_features, hidden_dim), nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
        self.prototypes = nn.Linear(out_dim, n_prototypes, bias=False)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere (SwAV does it before each forward)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, crops: list) -> tuple:
        """crops: list of N x 3 x H_v x W_v. Crops of the same size (consecutive) go through the
        backbone as one batch. Returns (embeddings, scores): (n_crops N) x D unit vectors and
        (n_crops N) x K prototype scores, crop-major (crop 0's N rows first). Both are float32
        even under autocast: bf16 would round cosine scores to ~0.004, i.e. 0.04 in logits at T=0.1."""
        feats, start = [], 0
        for end in _same_size_runs(crops):
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        z = self.projection(torch.cat(feats))
        with torch.autocast(device_type=z.device.type, enabled=False):
            emb = F.normalize(z.float(), dim=1)
            return emb, self.prototypes(emb)


def _same_size_runs(crops: list) -> list:
    """End indices of the runs of consecutive crops that share a spatial size."""
    ends = [i for i in range(1, len(crops)) if crops[i].shape[-2:] != crops[i - 1].shape[-2:]]
    return ends + [len(crops)]


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, *, epsilon: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Soft codes of SwAV's equipartitioned assignment, computed over all ranks together.

    scores: B_local x K prototype scores of this rank's samples (queue rows included). Computed in
    float32 with autocast off: exp(1/0.05) = 4.85e8 overflows float16 (anchors §0.6).
    Q = exp(scores / eps)^T (K x B) is divided by its global sum, then ``n_iters`` times: rows
    (prototypes) scaled to 1/K each, with row sums all-reduced; columns (samples, all local) to
    1/B, B the global number of columns. Returns B_local x K codes whose rows sum to 1; the
    prototype masses sum_b q_bk are approximately B/K (exactly so as n_iters grows).
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        q = torch.exp(scores.detach().float() / epsilon).t()  # K x B_local
        n_protos = q.shape[0]
        totals = torch.stack([q.sum(), q.new_tensor(float(q.shape[1]))])
        all_reduce_sum(totals)  # [global mass, global number of samples B]
        q /= totals[0]
        n_cols = totals[1]
        for _ in range(n_iters):
            rows = all_reduce_sum(q.sum(dim=1, keepdim=True))  # K x 1
            q /= rows
            q /= n_protos
            q /= q.sum(dim=0, keepdim=True)  # 1 x B_local: every column is a local sample
            q /= n_cols
        q *= n_cols
        return q.t()


def swapped_prediction_loss(scores: list, codes: dict, temperature: float = 0.1) -> torch.Tensor:
    """SwAV loss: for each assigned crop i, the mean over the other crops v of the cross-entropy
    between code q_i and softmax(scores_v / T), then the mean over the assigned crops. With two
    crops this is (l(z0, q1) + l(z1, q0)) / 2, the paper's L(z0, z1) averaged (§3.1).

    scores: list of n_crops tensors, each B x K; codes: {crop index: B x K codes (rows sum to 1)}.
    """
    if len(scores) < 2 or not codes:
        raise ValueError(f"swapped prediction needs >= 2 crops and >= 1 code, got {len(scores)}, {len(codes)}")
    with torch.autocast(device_type=scores[0].device.type, enabled=False):
        log_p = F.log_softmax(torch.stack(scores).float() / temperature, dim=2)  # V x B x K
        total = log_p.new_zeros(())
        for i, q in codes.items():
            ce = -(q.float().unsqueeze(0) * log_p).sum(dim=2).mean(dim=1)  # V: l(z_v, q_i)
            total = total + (ce.sum() - ce[i]) / (len(scores) - 1)
        return total / len(codes)


class EmbeddingQueue:
    """Per-rank FIFO of past embeddings of the assigned crops (SwAV "queue", anchors §2.4).

    It stores L2-normalised embeddings, not scores; scores are recomputed with the current
    prototypes. It is used only once full. ``state_dict`` gathers every rank's queue (a
    collective: call it on all ranks) so one checkpoint restores all of them.
    """

    def __init__(self, n_assign: int, length: int, dim: int, *, device, rank: int = 0, world_size: int = 1):
        if length < 1:
            raise ValueError(f"queue length must be >= 1, got {length}")
        self.rank, self.world_size = rank, world_size
        self.buffer = torch.zeros(n_assign, length, dim, device=device)
        self.filled = 0

    @property
    def full(self) -> bool:
        return self.filled >= self.buffer.shape[1]

    @torch.no_grad()
    def push(self, embeddings: list) -> None:
        """Insert the newest embeddings (one B x D tensor per assigned crop) at the front."""
        length = self.buffer.shape[1]
        for i, emb in enumerate(embeddings):
            n = min(emb.shape[0], length)
            self.buffer[i] = torch.cat([emb[:n].detach().float(), self.buffer[i, : length - n]])
        self.filled = min(self.filled + embeddings[0].shape[0], length)

    def state_dict(self) -> dict:
        filled = torch.tensor([self.filled], device=self.buffer.device)
        return {"buffer": all_gather_cat(self.buffer.unsqueeze(0)).cpu(),
                "filled": all_gather_cat(filled).cpu(), "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> bool:
        """Restore this rank's queue; returns False (queue left empty) when the world size or the
        queue shape changed since the checkpoint."""
        if state.get("world_size") != self.world_size or state["buffer"].shape[1:] != self.buffer.shape:
            return False
        self.buffer.copy_(state["buffer"][self.rank])
        self.filled = int(state["filled"][self.rank])
        return True


@torch.no_grad()
def assignment_codes(scores: list, embeddings: list, prototypes: torch.Tensor, queue, *,
                     epsilon: float, n_iters: int) -> list:
    """Codes for the assigned crops, one B x K tensor each. ``scores``/``embeddings`` hold the assigned
    crops' B x K scores and B x D embeddings in crop order; with a full ``queue`` its embeddings'
    scores (against the current prototypes, K x D) are prepended before Sinkhorn and only the
    current batch's rows are kept. The queue is then updated with the current embeddings."""
    use_queue = queue is not None and queue.full
    codes = []
    for i, s in enumerate(scores):
        s = s.detach().float()
        if use_queue:
            s = torch.cat([queue.buffer[i] @ prototypes.detach().float().t(), s])
        codes.append(sinkhorn(s, epsilon=epsilon, n_iters=n_iters)[-scores[i].shape[0]:])
    if queue is not None:
        queue.push(embeddings)
    return codes


def check_epsilon(epsilon: float) -> None:
    """Raise when exp(1/epsilon) would overflow float32 inside Sinkhorn."""
    if not epsilon >= _MIN_EPSILON:
        raise ValueError(f"swav.epsilon={epsilon} is too small: exp(1/eps) overflows float32 "
                         f"(need eps >= {_MIN_EPSILON:.4f}; SwAV's advice for collapse is 0.03)")


def collapse_value(n_prototypes: int) -> float:
    """The loss of a collapsed model (uniform codes and predictions): ln K."""
    return math.log(n_prototypes)


def swav_loss(model, crops: list, queue, *, prototypes: torch.Tensor, crops_for_assign=(0, 1),
              temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iters: int = 3) -> tuple:
    """One SwAV step's (loss (local mean), embeddings of crop 0): forward all crops, Sinkhorn codes of the
    assigned crops (with the queue when full), swapped prediction. ``prototypes`` is the (unwrapped)
    prototype weight, K x D, used to score the queue; call model.normalize_prototypes() before."""
    emb, scores = model(crops)
    n = crops[0].shape[0]
    emb, scores = emb.split(n), scores.split(n)  # per crop: B x D, B x K
    codes = assignment_codes([scores[i] for i in crops_for_assign], [emb[i] for i in crops_for_assign],
                             prototypes, queue, epsilon=epsilon, n_iters=sinkhorn_iters)
    return swapped_prediction_loss(list(scores), dict(zip(crops_for_assign, codes)), temperature), emb[0]
