"""Online kNN probe for pre-training (monitoring only, not a paper protocol): leave-one-out
weighted k-nearest-neighbour accuracy of the backbone's pooled features on a small labelled set
of identity folders (ROOT/<identity>/<image>), searched with faiss.

Weighted vote as in DINO's k-NN evaluation (Caron et al. 2021): each of the k neighbours votes
for its label with weight exp(cosine / T).
"""
import os

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from common.distributed import all_gather_varlen
from pretrain.data import IMAGE_EXTENSIONS, MEAN, STD, load_rgb


def identity_folders(root: str) -> tuple:
    """(paths, labels, class names) of ROOT/<class>/<image> files, sorted."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"kNN probe root not found: {root}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(root, name, f) for f in files]
        labels += [label] * len(files)
    if len(classes) < 2 or not paths:
        raise ValueError(f"{root}: the kNN probe needs identity sub-folders (>= 2) holding images")
    return paths, np.asarray(labels), classes


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = 20, temperature: float = 0.07) -> float:
    """Leave-one-out top-1 accuracy of the weighted k-NN vote on L2-normalised ``features`` (N x D)."""
    n = features.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("kNN probe needs at least 2 samples")
    feats = np.ascontiguousarray(features, dtype=np.float32)
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    sims, nbrs = index.search(feats, k + 1)  # N x (k + 1), usually self first
    self_hit = nbrs == np.arange(n)[:, None]
    keep = np.where(self_hit.any(1, keepdims=True), ~self_hit, np.arange(k + 1)[None] < k)
    sims, nbrs = sims[keep].reshape(n, k), nbrs[keep].reshape(n, k)  # drop self (or the (k+1)-th)
    n_classes = int(labels.max()) + 1
    votes = np.zeros((n, n_classes))
    np.add.at(votes, (np.repeat(np.arange(n), k), labels[nbrs].ravel()), np.exp(sims / temperature).ravel())
    return float((votes.argmax(1) == labels).mean())


@torch.no_grad()
def knn_probe(backbone, root: str, *, size: int, batch_size: int, device, rank: int = 0,
              world_size: int = 1, k: int = 20) -> dict:
    """Features of every readable image (each rank takes indices rank::world_size, gathered by
    index), then the leave-one-out kNN accuracy. The backbone runs in eval mode and is put back
    in its previous mode."""
    paths, labels, classes = identity_folders(root)
    prep = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])
    mine = list(range(rank, len(paths), world_size))
    was_training = backbone.training
    backbone.eval()
    feats, idx = [], []
    for start in range(0, len(mine), batch_size):
        chunk = [(i, load_rgb(paths[i])) for i in mine[start: start + batch_size]]
        chunk = [(i, img) for i, img in chunk if img is not None]
        if chunk:
            x = torch.stack([prep(img) for _, img in chunk]).to(device)
            feats.append(F.normalize(backbone(x).float(), dim=1))
            idx.append(torch.tensor([i for i, _ in chunk], device=device))
    backbone.train(was_training)
    dim = backbone.num_features
    feats = all_gather_varlen(torch.cat(feats) if feats else torch.zeros(0, dim, device=device))
    idx = all_gather_varlen(torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long, device=device))
    order = idx.cpu().numpy()
    acc = knn_accuracy(feats.cpu().numpy(), labels[order], k=k)
    return {"knn_top1": acc, "knn_images": int(len(order)), "knn_skipped": len(paths) - int(len(order)),
            "knn_classes": len(classes)}
