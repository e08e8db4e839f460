"""k-NN identity probe for pre-training (monitoring only, not a paper protocol; run by pretrain/probes.py):
leave-one-out weighted k-nearest-neighbour accuracy of the backbone's pooled features on identity
folders (ROOT/<identity>/<image>), searched with faiss.

Weighted vote as in DINO's k-NN evaluation (Caron et al. 2021): each of the k neighbours votes
for its label with weight exp(cosine / T).
"""
import os

import faiss
import numpy as np

from pretrain.data import IMAGE_EXTENSIONS


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
