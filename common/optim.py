"""Optimisation for pre-training and fine-tuning (paper App. A.1-A.2): LARS (SwAV's LARC), per-iteration schedules, param groups.

Facts relied on (/work/shared/research/anchors_frl_swav.md §2.8-2.9): SwAV wraps
SGD(momentum=0.9, weight_decay=wd) in apex LARC(trust_coefficient=0.001, clip=False), applied
to every parameter including BN weights and biases, and sets the lr each iteration from a
precomputed NumPy array: linear warm-up `linspace(start_warmup, base, n_warmup)` followed by the
cosine `final + 0.5 (base - final)(1 + cos(pi t / n_cosine))`, t = 0 .. n_cosine - 1.
The paper's pre-training recipe (App. A.1): LARS, lr 4.8 decayed to 0.045 with a cosine,
10 warm-up epochs, weight decay 1e-6.
"""
import math

import numpy as np
import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum on gradients rescaled layer-wise as in SwAV's LARC (clip=False).

    For every parameter p with gradient g, in its group (lr, momentum, weight_decay=wd,
    trust_coefficient=c, eps):
        if ||p|| > 0 and ||g|| > 0:  a = c ||p|| / (||g|| + wd ||p|| + eps),  d = a (g + wd p)
        else (zero-norm case):       a = 1,                                    d = g
        buf = momentum * buf + d   (buf = d at the first step; no dampening, no Nesterov)
        p  <- p - lr * buf
    Weight decay is folded into the gradient before the adaptive ratio, so the step is
    lr * c * ||p|| / ||g|| in size whatever wd is. The zero-norm case reproduces LARC exactly:
    a parameter whose norm is 0 (a BN bias or a zero-initialised layer at the start) or whose
    gradient is 0 is neither rescaled nor decayed and takes a plain SGD step at the full lr
    (anchors_frl_swav.md §2.8 "Quirk"). There is no clipping of the ratio and no exclusion of
    BN/bias parameters: exclude them, if wanted, through `param_groups(no_decay_norm_bias=True)`.
    The ratio is computed on tensors (no host synchronisation); momentum buffers are stored
    under "momentum_buffer" as in torch.optim.SGD. Paper: You et al. 2017, arXiv:1708.03888.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0 or eps < 0:
            raise ValueError(f"LARS: invalid hyper-parameters lr={lr} momentum={momentum} "
                             f"weight_decay={weight_decay} trust_coefficient={trust_coefficient} eps={eps}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            trust, eps = group["trust_coefficient"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                grad = p.grad
                p_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(grad)
                scaled = (p_norm > 0) & (g_norm > 0)
                ratio = torch.where(scaled, trust * p_norm / (g_norm + wd * p_norm + eps), 1.0)
                decay = scaled.to(p.dtype) * wd  # 0 in the zero-norm case
                d_p = (grad + decay * p) * ratio
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.clone()
                    else:
                        buf.mul_(momentum).add_(d_p)
                    d_p = buf
                p.add_(d_p, alpha=-lr)
        return loss


def _n_iters(epochs: float, iters_per_epoch: int, what: str) -> int:
    if iters_per_epoch < 1 or epochs < 0:
        raise ValueError(f"{what}: need iters_per_epoch >= 1 and epochs >= 0, "
                         f"got {iters_per_epoch} and {epochs}")
    return int(round(epochs * iters_per_epoch))


def _warmup(start_value: float, base_value: float, warmup_epochs: float, epochs: float,
            iters_per_epoch: int) -> tuple[np.ndarray, int]:
    n_total = _n_iters(epochs, iters_per_epoch, "schedule")
    n_warm = _n_iters(warmup_epochs, iters_per_epoch, "warm-up")
    if n_warm > n_total or n_total == 0:
        raise ValueError(f"schedule: {n_total} iterations in all, {n_warm} of warm-up")
    return np.linspace(start_value, base_value, n_warm), n_total


def cosine_schedule(base_value: float, final_value: float, epochs: float, iters_per_epoch: int,
                    warmup_epochs: float = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values: linear warm-up, then cosine from base_value toward final_value (SwAV).

    Warm-up: linspace(start_warmup_value, base_value, n_warm) (both ends included, so the last
    warm-up value is base_value). Cosine: final + 0.5 (base - final)(1 + cos(pi t / n_cos)) for
    t = 0 .. n_cos - 1, so it starts at base_value again and stops one step short of final_value,
    as in SwAV (anchors_frl_swav.md §2.9). Fractional epochs are rounded to whole iterations.
    """
    warm, n_total = _warmup(start_warmup_value, base_value, warmup_epochs, epochs, iters_per_epoch)
    n_cos = n_total - len(warm)
    t = np.arange(n_cos)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(math.pi * t / max(n_cos, 1)))
    return np.concatenate([warm, cosine]).astype(np.float64)


def step_schedule(base_value: float, milestones_epochs, gamma: float, epochs: float,
                  iters_per_epoch: int, warmup_epochs: float = 0,
                  start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values: base_value * gamma ** (number of milestones reached), after warm-up.

    Iteration i has reached milestone m when i >= m * iters_per_epoch (so with integer epochs
    the value changes at the first iteration of epoch m, as torch's MultiStepLR stepped per
    epoch). The first warm-up iterations are linspace(start_warmup_value, base_value, n_warm).
    """
    warm, n_total = _warmup(start_warmup_value, base_value, warmup_epochs, epochs, iters_per_epoch)
    bounds = np.array([m * iters_per_epoch for m in milestones_epochs], dtype=np.float64)
    if np.any(bounds <= 0):
        raise ValueError(f"step_schedule: milestones must be positive epochs, got {milestones_epochs}")
    it = np.arange(n_total)
    reached = (it[:, None] >= bounds[None, :]).sum(axis=1)  # n_total x n_milestones -> n_total
    values = base_value * gamma ** reached.astype(np.float64)
    values[: len(warm)] = warm
    return values


def constant_schedule(value: float, epochs: float, iters_per_epoch: int) -> np.ndarray:
    """The same value at every iteration."""
    return np.full(_n_iters(epochs, iters_per_epoch, "constant_schedule"), value, dtype=np.float64)


def param_groups(model: nn.Module, *, weight_decay: float, backbone_lr_mult: float = 1.0,
                 backbone_prefix: str = "backbone.", no_decay_norm_bias: bool = False) -> list[dict]:
    """Split the trainable parameters into optimizer groups for fine-tuning.

    Parameters whose name starts with `backbone_prefix` (after dropping a DDP "module." prefix)
    get "lr_mult" = backbone_lr_mult, the others (the task head) "lr_mult" = 1.0; `set_lr`
    multiplies the scheduled lr by it, so call set_lr before the first step. With
    no_decay_norm_bias, every 1-D parameter (norm-layer weights and biases, all biases) gets
    weight decay 0, the others `weight_decay`; without it all get `weight_decay` (SwAV's choice,
    anchors_frl_swav.md §2.8). Frozen parameters (requires_grad False) are left out. Empty groups
    are dropped; each group also has a "name" for logging.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_backbone = name.removeprefix("module.").startswith(backbone_prefix)
        no_decay = no_decay_norm_bias and p.ndim <= 1
        groups.setdefault((in_backbone, no_decay), []).append(p)
    if not groups:
        raise ValueError("param_groups: the model has no trainable parameters")
    out = []
    for in_backbone in (False, True):
        for no_decay in (False, True):
            params = groups.get((in_backbone, no_decay))
            if params:
                out.append({"name": ("backbone" if in_backbone else "head") + ("_no_decay" if no_decay else ""),
                            "params": params,
                            "weight_decay": 0.0 if no_decay else weight_decay,
                            "lr_mult": backbone_lr_mult if in_backbone else 1.0})
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to lr * group["lr_mult"] (1.0 when the group has no multiplier).

    The value is stored as a Python float, so a schedule entry (a numpy scalar) never reaches the
    optimizer state, which checkpoints must hold as plain data.
    """
    for group in optimizer.param_groups:
        group["lr"] = float(lr) * group.get("lr_mult", 1.0)
