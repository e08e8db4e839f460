"""Emotion network and loss of paper App. D.1 (Table 12): a linear head for valence, arousal and expression classes.

App. D.1: "The task specific head h(.) is a linear layer that regresses the valence and arousal
values and also predicts the basic emotion classes. The network was trained to jointly minimise
the RMSE and CCC losses for valence and arousal, and the cross-entropy loss for classification."
Our reading (shared/research/anchors_recog_au_emotion.md §5.2): L = w_ce CE + sum over d in {v, a}
of [w_rmse RMSE_d + w_ccc (1 - CCC_d)], CCC on the batch with population moments as in EmoNet.
Bulat et al., ECCV 2022, https://arxiv.org/abs/2103.16554.
"""
import torch
from torch import nn
from torch.nn import functional as F


class EmotionNet(nn.Module):
    """``backbone`` + ``nn.Linear(num_features, 2 + num_classes)``; valence and arousal are
    tanh-bounded to [-1, 1], the rest are class logits."""

    def __init__(self, backbone, num_classes):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, 2 + num_classes)

    def forward(self, x):
        out = self.head(self.backbone(x))                                     # N x (2 + C)
        return {"valence": torch.tanh(out[:, 0]), "arousal": torch.tanh(out[:, 1]), "logits": out[:, 2:]}


def batch_ccc(pred, gt, eps=1e-8):
    """Lin's concordance 2 cov / (var_p + var_g + (mu_p - mu_g)^2) with 1/N moments, differentiable."""
    mp, mg = pred.mean(), gt.mean()
    vp, vg = ((pred - mp) ** 2).mean(), ((gt - mg) ** 2).mean()
    cov = ((pred - mp) * (gt - mg)).mean()
    return 2 * cov / (vp + vg + (mp - mg) ** 2 + eps)


class EmotionLoss(nn.Module):
    """w_ce CE(logits, class) + sum_{valence, arousal} [w_rmse RMSE + w_ccc (1 - CCC)].

    V/A terms use only rows whose V/A are annotated (``va_valid``); with fewer than two such rows
    in a batch the CCC is undefined and both V/A terms are 0 for that batch. The logged parts
    always have the same keys (ranks reduce them together).
    """

    def __init__(self, *, ce_weight=1.0, rmse_weight=1.0, ccc_weight=1.0):
        super().__init__()
        self.ce_weight, self.rmse_weight, self.ccc_weight = ce_weight, rmse_weight, ccc_weight

    def forward(self, outputs, expression, valence, arousal, va_valid):
        ce = F.cross_entropy(outputs["logits"].float(), expression)
        parts = {"ce": ce.detach()}
        loss = self.ce_weight * ce
        use = va_valid.bool()
        for name, gt in (("valence", valence), ("arousal", arousal)):
            pred = outputs[name].float()[use]
            parts[f"rmse_{name}"] = parts[f"ccc_{name}"] = torch.zeros((), device=ce.device)
            if pred.numel() < 2:
                continue
            rmse = torch.sqrt(torch.mean((pred - gt[use]) ** 2) + 1e-12)
            ccc = batch_ccc(pred, gt[use])
            loss = loss + self.rmse_weight * rmse + self.ccc_weight * (1 - ccc)
            parts[f"rmse_{name}"], parts[f"ccc_{name}"] = rmse.detach(), ccc.detach()
        return loss, parts
