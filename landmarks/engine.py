"""Heatmap regression's loss, targets and evaluation (paper §5.2, App. A.2), shared by train, eval and distill/.

Training runs in ``common.engine``. Loss: pixel-wise MSE between predicted and Gaussian target heatmaps
(App. A.2 "pixel-wise l2").
Evaluation decodes heatmaps to float image coordinates (argmax + quarter-pixel shift, inverse crop),
optionally averaging with the mirrored image's heatmaps (flip test, face-alignment ``api.py``),
gathers predictions by sample index across ranks (padded duplicates count once) and scores them
with the dataset's protocol (``landmarks.scores``).
"""
import numpy as np
import torch
from torch.utils.data import default_collate

from common.engine import make_loader
from common.files import first_paths
from common.finetune import gather_by_index
from common.logger import log, progress
from landmarks import formats, scores
from landmarks.data import LandmarkDataset
from landmarks.heatmaps import crop_to_heatmap, flip_heatmaps, heatmaps_to_image, render_heatmaps


def heatmap_loss(pred, target, valid):
    """Mean squared error per pixel, averaged over the valid samples of the batch."""
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))      # N
    valid = valid.to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


def eval_loader(samples, *, input_size, box_scale, batch_size, workers):
    """Loader over this rank's share of ``samples`` in index order; unreadable images stay in with valid=False
    (``evaluate`` counts them)."""
    return make_loader(LandmarkDataset(samples, input_size=input_size, box_scale=box_scale), batch_size=batch_size,
                       train=False, workers=workers, seed=0, collate_fn=default_collate)


def test_splits(dataset, root, splits, box):
    """Samples of every test split; 300W's private set is skipped (logged) when absent."""
    out = []
    for split in splits:
        try:
            out.append(formats.load_split(dataset, root, split, box))
        except formats.DatasetMissingError as e:
            if (dataset, split) != ("300w", "private"):
                raise
            log(f"300W private test set not found, skipped: {e}")
    return out


def gt_targets(*, input_size, heatmap_size, sigma):
    """Target function: Gaussians on the batch's (augmented) ground-truth points, rendered on device."""
    def targets(batch, device):
        points = crop_to_heatmap(batch["points"].to(device), input_size, heatmap_size)
        return render_heatmaps(points, heatmap_size, sigma)              # N x P x h x w
    return targets


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
    order, (preds, valid) = gather_by_index(torch.cat(rows).to(device), torch.cat(preds).to(device),
                                            torch.cat(valid).to(device, torch.uint8))
    return order, preds, valid.astype(bool)


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
