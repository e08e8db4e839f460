"""IJB-B / IJB-C 1:1 verification of paper §5.1, Table 4: meta files, features, template pooling, pair scores.

Protocol = insightface's IJB evaluation with its defaults (``recognition/_evaluation_/ijb/ijb_11.py``,
``arcface_torch/eval_ijbc.py``; shared/research/anchors_recog_au_emotion.md §1, Appendix A):
1. every ``loose_crop`` image is aligned with its 5 points (``*_name_5pts_score.txt``; row i of it
   and of ``*_face_tid_mid.txt`` describe the same image, checked here by name);
2. feature = raw embedding of the crop + raw embedding of its horizontal flip (no per-image L2 norm);
3. feature *= the detector's faceness score (column 12 of the 5-point file);
4. per template: mean over the images of each media, then sum over its media; L2-normalise;
5. pair score = dot product of the two template vectors (cosine); TAR@FAR by
   ``common.metrics.tar_at_far`` (sklearn ROC, nearest vertex).
Steps 4-5 are vectorised: one sparse (templates x images) matrix product pools all templates, and
pair scores come from blocked dense products between the templates that occur in each column of
the pair list (IJB pairs gallery-like templates against probe templates, so that block is dense),
read off at the pairs; the 15.66M IJB-C pairs score in seconds (bench/ijb_scoring.py).
"""
import os

import numpy as np
import scipy.sparse
import torch

from common import distributed as dist
from common.logger import progress
from common.metrics import IJB_FARS, roc, tar_at_far
from face_recognition.data import AlignedFaces, read_table

BENCHMARKS = ("ijbb", "ijbc")


def _meta_file(root, benchmark, suffix):
    return os.path.join(root, "meta", f"{benchmark}_{suffix}.txt")


def read_ijb_meta(root, benchmark):
    """The 1:1 meta data of an IJB release folder (``IJBB`` / ``IJBC``): {"files" (names in
    loose_crop/), "image_root", "templates", "medias" (N ints), "points" N x 5 x 2, "faceness" N,
    "pairs" P x 2 template ids, "labels" P (1 = genuine)}."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r}: expected one of {BENCHMARKS}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"IJB root not found: {root} (expected the {benchmark.upper()} folder "
                                f"with loose_crop/ and meta/)")
    tid_file = _meta_file(root, benchmark, "face_tid_mid")
    pts_file = _meta_file(root, benchmark, "name_5pts_score")
    pair_file = _meta_file(root, benchmark, "template_pair_label")
    names, tid_mid = read_table(tid_file, n_columns=3, numeric_from=1, dtype=np.int64)
    pt_names, pts = read_table(pts_file, n_columns=12, numeric_from=1, dtype=np.float32)
    _, pairs = read_table(pair_file, n_columns=3, numeric_from=0, dtype=np.int64)
    if len(names) != len(pt_names):
        raise ValueError(f"{tid_file} has {len(names)} rows but {pts_file} has {len(pt_names)}; "
                         f"row i of both must describe the same image")
    differ = np.flatnonzero(names != pt_names)
    if differ.size:
        i = differ[0]
        raise ValueError(f"{tid_file}:{i + 1} names {str(names[i])!r} but {pts_file}:{i + 1} names "
                         f"{str(pt_names[i])!r}; row i of both files must describe the same image")
    bad = np.flatnonzero((pairs[:, 2] != 0) & (pairs[:, 2] != 1))
    if bad.size:
        raise ValueError(f"{pair_file}:{bad[0] + 1}: label {pairs[bad[0], 2]} is not 0 or 1")
    return {"files": names, "image_root": os.path.join(root, "loose_crop"),
            "templates": tid_mid[:, 0], "medias": tid_mid[:, 1], "points": pts[:, :10].reshape(-1, 5, 2),
            "faceness": pts[:, 10], "pairs": pairs[:, :2], "labels": pairs[:, 2].astype(np.int8)}


def ijb_dataset(meta, *, size, mean, std):
    """AlignedFaces over the IJB images (label 0; -1 marks an unreadable file)."""
    return AlignedFaces(meta["files"], meta["points"], np.zeros(len(meta["files"]), dtype=np.int64),
                        size=size, mean=mean, std=std, root=meta["image_root"])


@torch.no_grad()
def extract_features(embedder, dataset, *, batch_size, num_workers, device):
    """(N x D float32 features: embed(x) + embed(flip(x)), N bool readable) for every item.

    Each rank embeds items rank, rank + world, ...; results are gathered with their sample
    indices and written by index, so every item counts exactly once (house style §8.13)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = np.arange(rank, len(dataset), world)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, mine), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    embedder.eval()
    feats, indices, labels = [], [], []
    for images, label, index in progress(loader, desc="IJB features"):
        images = images.to(device, non_blocking=True)
        both = embedder.embed(torch.cat([images, images.flip(-1)])).float()  # 2B x D
        feats.append(both[: len(images)] + both[len(images):])
        indices.append(index.to(device))
        labels.append(label.to(device))
    local_f = torch.cat(feats) if feats else torch.zeros(0, embedder.embedding_dim, device=device)
    local_i = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long, device=device)
    local_l = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    all_f = dist.all_gather_varlen(local_f).cpu().numpy()
    all_i = dist.all_gather_varlen(local_i).cpu().numpy()
    all_l = dist.all_gather_varlen(local_l).cpu().numpy()
    if not np.array_equal(np.bincount(all_i, minlength=len(dataset)), np.ones(len(dataset), dtype=np.int64)):
        raise RuntimeError("feature gather: some samples are missing or repeated")
    features = np.zeros((len(dataset), all_f.shape[1]), dtype=np.float32)
    features[all_i] = all_f
    readable = np.zeros(len(dataset), dtype=bool)
    readable[all_i] = all_l != -1
    features[~readable] = 0.0  # an unreadable image contributes nothing to its template
    return features, readable


def pool_templates(features, templates, medias):
    """(sorted template ids, T x D L2-normalised template features).

    Template = sum over its media of the mean of that media's image features (rows of
    ``features`` already carry the flip sum and the faceness weight). One sparse matrix holds,
    for image i of media m in template t, the weight 1 / |images of (t, m)| at (t, i)."""
    features = np.asarray(features, dtype=np.float32)
    tids, t_row = np.unique(templates, return_inverse=True)
    _, m_idx = np.unique(medias, return_inverse=True)
    _, group = np.unique(t_row.astype(np.int64) * (m_idx.max() + 1) + m_idx, return_inverse=True)
    weight = 1.0 / np.bincount(group)[group]  # 1 / (images in this image's (template, media))
    pooling = scipy.sparse.csr_matrix((weight.astype(np.float32), (t_row, np.arange(len(t_row)))),
                                      shape=(len(tids), len(t_row)))
    pooled = np.asarray(pooling @ features, dtype=np.float32)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return tids, pooled / np.maximum(norms, 1e-12)  # an all-unreadable template stays zero


def template_rows(tids, query, source="pair list"):
    """Row of each template id of ``query`` in the sorted ``tids``; unknown ids raise.

    IJB template ids are small non-negative integers, so a lookup table indexed by id does it in
    one gather (15.66M ids in ~0.1 s); other ids fall back to a binary search."""
    query = np.asarray(query)
    if len(tids) and tids[0] >= 0 and tids[-1] < 64 * len(tids) + (1 << 20) and query.size:
        table = np.full(int(tids[-1]) + 1, -1, dtype=np.int64)
        table[tids] = np.arange(len(tids))
        rows = table[np.clip(query, 0, len(table) - 1)]
        unknown = (rows < 0) | (query < 0) | (query >= len(table))
        rows[unknown] = 0
    else:
        rows = np.clip(np.searchsorted(tids, query), 0, max(len(tids) - 1, 0))
        unknown = tids[rows] != query
    if unknown.any():
        raise ValueError(f"{source}: {int(unknown.sum())} template ids have no image, e.g. "
                         f"{np.unique(query[unknown])[:5].tolist()}")
    return rows


def score_pairs(tids, template_feats, t1, t2, *, block_rows=1024, dense_limit=8.0, chunk=1 << 16):
    """Cosine score of every pair (t1[k], t2[k]) of template ids, float32, in pair order.

    When the templates of column 1 x those of column 2 are at most ``dense_limit`` times the
    number of pairs (IJB-C: 3,531 x 19,593 = 4.4x its 15.66M pairs), the block of their dot
    products is computed by matrix products, ``block_rows`` column-1 templates at a time, and read
    at the pairs; otherwise pairs are scored by row-wise dot products in chunks."""
    a = template_rows(tids, np.asarray(t1))
    b = template_rows(tids, np.asarray(t2))
    feats = np.ascontiguousarray(template_feats, dtype=np.float32)
    n = len(tids)
    ua = np.flatnonzero(np.bincount(a, minlength=n))
    ub = np.flatnonzero(np.bincount(b, minlength=n))
    if len(ua) * len(ub) <= dense_limit * max(len(a), 1):
        pos_a, pos_b = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        pos_a[ua], pos_b[ub] = np.arange(len(ua)), np.arange(len(ub))
        fb_t = np.ascontiguousarray(feats[ub].T)  # D x |B|
        block = np.empty((len(ua), len(ub)), dtype=np.float32)
        for start in range(0, len(ua), block_rows):  # a loop over row blocks, not over pairs
            np.matmul(feats[ua[start:start + block_rows]], fb_t, out=block[start:start + block_rows])
        return block[pos_a[a], pos_b[b]]
    scores = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):  # sparse pair sets: row-wise dot products per chunk
        sl = slice(start, start + chunk)
        scores[sl] = np.einsum("ij,ij->i", feats[a[sl]], feats[b[sl]])
    return scores


def verification_metrics(scores, labels, fars=IJB_FARS):
    """{"tar_at_far": {"1e-06": TAR, ...}, "auc": area under the ROC} (TAR as a fraction)."""
    tar = tar_at_far(scores, labels, fars)
    fpr, tpr, _ = roc(scores, labels)
    return {"tar_at_far": {f"{far:g}": value for far, value in tar.items()},
            "auc": float(np.trapezoid(tpr, fpr))}


def evaluate_ijb(embedder, root, benchmark, *, size, mean, std, batch_size, num_workers, device):
    """Whole 1:1 protocol on one benchmark. Every rank extracts its share of the features; rank 0
    returns (metrics dict, scores P, labels P, pairs P x 2), the other ranks None."""
    meta = read_ijb_meta(root, benchmark)
    dataset = ijb_dataset(meta, size=size, mean=mean, std=std)
    features, readable = extract_features(embedder, dataset, batch_size=batch_size,
                                          num_workers=num_workers, device=device)
    if not dist.is_main():
        return None
    features *= meta["faceness"][:, None]  # insightface use_detector_score=True
    tids, templates = pool_templates(features, meta["templates"], meta["medias"])
    scores = score_pairs(tids, templates, meta["pairs"][:, 0], meta["pairs"][:, 1])
    metrics = verification_metrics(scores, meta["labels"])
    metrics.update({"images": len(dataset), "unreadable": int((~readable).sum()), "templates": len(tids),
                    "pairs": len(scores), "genuine": int(meta["labels"].sum())})
    return metrics, scores, meta["labels"], meta["pairs"]
