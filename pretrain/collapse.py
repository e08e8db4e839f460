"""Collapse guard for SwAV / MoCo pre-training (issue 17; paper §3.1, App. A.1): stops a run whose
representation has collapsed instead of letting it train for days on a constant.

Two signs, each held for ``patience`` consecutive steps:
- the loss pinned within ``tol`` of its collapse value: ln K for SwAV (uniform codes and predictions,
  anchors_frl_swav.md §2.17), ln(queue + 1) for MoCo (the positive no more similar than any negative);
- the embeddings' spread across the batch below ``min_spread``: sqrt(1 - |mean unit embedding|^2), which
  is ~1 for embeddings spread over the sphere and 0 when every image maps to one point.
"""
import math

import torch

REMEDIES = {
    "swav": "a queue (swav.queue_length, started earlier with swav.queue_start_epoch) when the batch is small; "
            "K (swav.n_prototypes) no larger than batch + queue; a lower optim.lr; a lower swav.epsilon "
            "(0.03); milder crops (aug.crop_scales) and colour (aug.color_strength)",
    "moco": "a lower optim.lr; a queue (moco.queue_size) of several batches; moco.temperature 0.2; "
            "milder crops (aug.crop_scales) and colour (aug.color_strength)",
}


def collapse_value(method: str, *, n_prototypes: int = 0, queue_size: int = 0) -> float:
    """The loss of a collapsed model: ln K (SwAV) or ln(queue + 1) (MoCo)."""
    return math.log(n_prototypes) if method == "swav" else math.log(queue_size + 1)


@torch.no_grad()
def embedding_spread(emb: torch.Tensor) -> torch.Tensor:
    """sqrt of the total variance over the batch of unit embeddings (B x D): sqrt(1 - |mean|^2), a 0-d tensor."""
    mean = emb.detach().float().mean(0)
    return (1.0 - mean.pow(2).sum()).clamp(min=0).sqrt()


class CollapseGuard:
    """Feed each step's (loss, spread) to ``update``; it returns the message once a sign has held for
    ``patience`` steps (0: never), and ``stop`` says whether the run must end (on_collapse=stop)."""

    def __init__(self, method: str, value: float, *, tol: float, min_spread: float, patience: int,
                 on_collapse: str = "stop"):
        if on_collapse not in ("stop", "warn"):
            raise ValueError(f"collapse.on_collapse={on_collapse!r}: expected 'stop' or 'warn'")
        self.method, self.value, self.tol, self.min_spread, self.patience = method, value, tol, min_spread, patience
        self.stop = on_collapse == "stop"
        self.loss_streak = self.spread_streak = 0
        self.collapsed = False

    def update(self, loss: float, spread: float):
        self.loss_streak = self.loss_streak + 1 if abs(loss - self.value) < self.tol else 0
        self.spread_streak = self.spread_streak + 1 if spread < self.min_spread else 0
        if self.collapsed or self.patience <= 0 or max(self.loss_streak, self.spread_streak) < self.patience:
            return None
        self.collapsed = True
        sign = (f"the loss has stayed within {self.tol} of its collapse value {self.value:.3f} for "
                f"{self.loss_streak} steps" if self.loss_streak >= self.patience else
                f"the embeddings' spread has stayed below {self.min_spread} for {self.spread_streak} steps")
        return (f"{self.method} collapsed: {sign}. Known remedies: {REMEDIES[self.method]}. "
                f"(collapse.on_collapse=warn keeps training)")
