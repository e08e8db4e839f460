"""Training and evaluation loops of heatmap regression (paper §5.2, App. A.2), shared with eval.py, distill/.

Loss: pixel-wise MSE between predicted and Gaussian target heatmaps (App. A.2 "pixel-wise l2").
Evaluation decodes heatmaps to float image coordinates (argmax + quarter-pixel shift, inverse crop),
optionally averaging with the mirrored image's heatmaps (flip test, face-alignment ``api.py``),
gathers predictions by sample index across ranks (padded duplicates count once) and scores them
with the dataset's protocol (``landmarks.scores``).
"""
import math

import numpy as np
import torch

from common import distributed
from common.checkpoint import unwrap
from common.files import first_paths
from common.logger import progress
from common.optim import set_lr
from landmarks import scores
from landmarks.heatmaps import crop_to_heatmap, flip_heatmaps, heatmaps_to_image, render_heatmaps


def heatmap_loss(pred, target, valid):
    """Mean squared error per pixel, averaged over the valid samples of the batch."""
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))      # N
    valid = valid.to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


def gt_targets(*, input_size, heatmap_size, sigma):
    """Target function: Gaussians on the batch's (augmented) ground-truth points, rendered on device."""
    def targets(batch, device):
        points = crop_to_heatmap(batch["points"].to(device), input_size, heatmap_size)
        return render_heatmaps(points, heatmap_size, sigma)              # N x P x h x w
    return targets


def train_one_epoch(model, loader, optimizer, lr_values, first_iter, *, device, targets, epoch,
                    amp=False, freeze_backbone=False):
    """One pass over ``loader``; the lr of iteration k is ``lr_values[first_iter + k]``.

    targets: callable(batch, device) -> target heatmaps (``gt_targets``; distillation passes a
    teacher). freeze_backbone: linear adaptation (paper §3.3): backbone BN stays in eval mode.
    Returns {"loss", "lr", "iterations", "skipped_images"} averaged / summed over ranks.
    """
    model.train()
    if freeze_backbone:
        unwrap(model).backbone.eval()
    total = torch.zeros(3, dtype=torch.float64, device=device)          # loss sum, batches, skipped
    lr = float("nan")
    for k, batch in enumerate(progress(loader, desc=f"epoch {epoch}")):
        lr = float(lr_values[min(first_iter + k, len(lr_values) - 1)])
        set_lr(optimizer, lr)
        images = batch["image"].to(device, non_blocking=True)
        valid = batch["valid"].to(device)
        target = targets(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(images)
        loss = heatmap_loss(pred, target, valid)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at epoch {epoch}, iteration {first_iter + k}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += torch.tensor([value, 1.0, float((~batch["valid"]).sum())], dtype=torch.float64,
                              device=device)
    distributed.all_reduce_sum(total)
    return {"loss": float(total[0] / total[1].clamp(min=1)), "lr": lr,
            "iterations": int(total[1]) // distributed.get_world_size(), "skipped_images": int(total[2])}


@torch.no_grad()
def predict(model, loader, *, device, input_size, flip_perm=None, amp=False, decode="quarter"):
    """(indices (N,), image-coordinate predictions (N, P, 2) float64, valid (N,)) over all ranks,
    one row per dataset index, sorted by index."""
    model.eval()
    rows, preds, valid = [], [], []
    for batch in progress(loader, desc="eval"):
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            heatmaps = model(images).float()
            if flip_perm is not None:
                mirrored = model(images.flip(-1)).float()
                heatmaps = (heatmaps + flip_heatmaps(mirrored, flip_perm)) / 2
        preds.append(heatmaps_to_image(heatmaps.cpu(), batch["matrix"], input_size, decode))
        rows.append(batch["index"])
        valid.append(batch["valid"])
    rows = distributed.all_gather_varlen(torch.cat(rows).to(device)).cpu()
    preds = distributed.all_gather_varlen(torch.cat(preds).to(device)).cpu()
    valid = distributed.all_gather_varlen(torch.cat(valid).to(device, torch.uint8)).cpu()
    order, first = np.unique(rows.numpy(), return_index=True)            # drop sampler padding
    return order, preds.numpy()[first], valid.numpy()[first].astype(bool)


def _require_finite(nmes, keys, where):
    """Raise naming the images whose NME is NaN or infinite (never write NaN metrics)."""
    bad = sorted({keys[i] for values in nmes.values() for i in np.flatnonzero(~np.isfinite(values))})
    if bad:
        raise ValueError(f"{where}: non-finite NME for {len(bad)} images (NaN or infinite ground truth or "
                         f"predictions): {first_paths(bad)}")


def evaluate(model, loader, samples, *, device, input_size, flip_perm=None, amp=False, decode="quarter"):
    """Metrics of ``samples`` (the loader's dataset) as ``landmarks.scores.summarize`` gives them,
    plus the per-image primary NME array and the predictions (image coordinates)."""
    index, pred, valid = predict(model, loader, device=device, input_size=input_size,
                                 flip_perm=flip_perm, amp=amp, decode=decode)
    if len(index) != len(samples):
        raise RuntimeError(f"evaluated {len(index)} of {len(samples)} samples")
    keep = index[valid]
    if len(keep) == 0:
        raise RuntimeError(f"no readable image in {samples.dataset}/{samples.split}")
    boxes = None if samples.dataset_boxes is None else samples.dataset_boxes[keep]
    nmes = scores.per_image_nmes(samples.dataset, pred[valid], samples.points[keep], boxes)
    _require_finite(nmes, [samples.keys[i] for i in keep], f"{samples.dataset}/{samples.split}")
    metrics = scores.summarize(samples.dataset, nmes)
    metrics["skipped_images"] = int((~valid).sum())
    return metrics, nmes[scores.PRIMARY[samples.dataset]], pred
