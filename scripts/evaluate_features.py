"""Frozen features of a backbone on a task's dataset, through common.feature_cache (issue 20; paper §3.3 linear).

Feature taps (the ``fc`` input of a ResNet and what pretrain/probes.py's probes use):
- ``pooled``: layer4 globally average-pooled, N x C4 (for a ``--model`` factory: its forward's output);
- ``spatial``: layer3 and layer4 average-pooled to grid x grid and concatenated, N x (C3 + C4) grid^2
  (``pretrain.probes.feature_taps``); only for modules with ``feature_maps`` (our Backbone).
Items that carry a ``label`` (a flat float tensor, e.g. the 3D bench's crop-frame landmark targets, which are
costly to compute) have it stored beside the features as ``label``, so one pass reads images and labels.
"""
import numpy as np
import torch

from common.engine import collate_readable
from pretrain.probes import feature_taps


def _as_item(item):
    """A face_recognition (image, label, index) tuple as an item dict, None when its label -1 marks it unreadable."""
    if isinstance(item, tuple):
        image, label, index = item
        return None if int(label) == -1 else {"image": image, "index": index}
    return item


def _collate(items):
    """(images, dataset indices, labels or None) of the readable items (``common.engine.collate_readable``'s
    policy)."""
    batch = collate_readable([_as_item(item) for item in items])
    return batch.get("image", torch.zeros(0)), batch.get("index", torch.zeros(0, dtype=torch.long)), batch.get("label")


def _taps(model, x, *, grid, spatial):
    """(pooled N x D, spatial N x S or None) of a normalised batch ``x`` (module docstring)."""
    if spatial and hasattr(model, "feature_maps"):
        pooled, maps = feature_taps(model, x, grid)
        return pooled.double().cpu().numpy(), maps.double().cpu().numpy()
    return model(x).double().cpu().numpy(), None


@torch.no_grad()
def extract(model, dataset, *, batch_size=64, workers=0, device="cpu", grid=2, spatial=False, flip_sum=False) -> dict:
    """{"pooled", ["spatial"], "seen"} for every item of ``dataset`` (rows of unreadable items are 0 and
    ``seen`` False); ``flip_sum`` adds the mirrored image's pooled features (the IJB protocol)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    n = len(dataset)
    out, seen = {}, np.zeros(n, dtype=bool)
    try:
        for images, index, label in loader:
            if not len(index):
                continue
            x = images.to(device).float()
            pooled, maps = _taps(model, x, grid=grid, spatial=spatial)
            if flip_sum:
                pooled = pooled + _taps(model, x.flip(-1), grid=grid, spatial=False)[0]
            label = None if label is None else label.double().numpy()
            for name, value in (("pooled", pooled), ("spatial", maps), ("label", label)):
                if value is None:
                    continue
                if name not in out:
                    out[name] = np.zeros((n, value.shape[1]), dtype=np.float64 if name == "label" else np.float32)
                out[name][index.numpy()] = value
            seen[index.numpy()] = True
    finally:
        model.train(was_training)
    if "pooled" not in out:
        raise ValueError(f"feature extraction: no readable image in the {n} items of {type(dataset).__name__}")
    out["seen"] = seen
    return out
