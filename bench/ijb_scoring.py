"""Benchmark of IJB 1:1 template pooling + pair scoring + TAR@FAR (paper §5.1, Table 4) against the reference scheme.

    python bench/ijb_scoring.py [--scale 1.0] [--dim 512] [--seed 0]

Random features at IJB-C's sizes (shared/research/anchors_recog_au_emotion.md §1.2: 469,375
images, 23,124 templates = 3,531 gallery (G1 + G2) + 19,593 probe templates, 15,658,489 pairs of
which 19,557 genuine; ``--scale`` shrinks all counts). The pair list is shuffled, so no order of
the real file is assumed. Two pipelines on the same input, timed in this one run:

- reference: the insightface scheme (``ijb_11.py``), rewritten here: a Python loop over
  templates with ``np.where`` over all images and a loop over each template's media, scores by
  batches of 100,000 pairs, sklearn ``roc_curve`` and the nearest-vertex TAR read-off;
- ours: ``face_recognition.ijb.pool_templates`` (one sparse product), ``score_pairs`` (blocked
  dense products) and ``common.metrics.tar_at_far``.

Prints the times, the speed-up and the TARs, and asserts the TARs are identical.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.metrics import IJB_FARS, tar_at_far  # noqa: E402
from face_recognition.ijb import pool_templates, score_pairs  # noqa: E402

IJBC = {"images": 469_375, "gallery": 3_531, "probe": 19_593, "pairs": 15_658_489, "genuine": 19_557}


def synthetic_ijb(scale, dim, seed, signal=0.1):
    """Random raw features, template / media ids, pairs and labels with IJB-C's sizes x scale.

    Every gallery template is a subject; each probe template shows one gallery subject. An image
    feature is ``signal`` x its subject's unit vector + Gaussian noise / sqrt(dim), so genuine
    pairs score higher and TAR@FAR lies between 0 and 1. Genuine pairs are (subject's gallery
    template, probe); impostor pairs take any other gallery template; the pair order is random."""
    rng = np.random.default_rng(seed)
    n = {k: max(2, int(round(v * scale))) for k, v in IJBC.items()}
    n_gal, n_probe = n["gallery"], n["probe"]
    n_templates = n_gal + n_probe
    tids = np.sort(rng.choice(10 * n_templates, n_templates, replace=False)) + 1  # not contiguous, like IJB
    subject = np.concatenate([np.arange(n_gal), rng.integers(0, n_gal, n_probe)])  # per template
    t_of_image = np.concatenate([np.arange(n_templates), rng.integers(0, n_templates, n["images"] - n_templates)])
    templates = tids[t_of_image]
    medias = t_of_image * 8 + rng.integers(0, 8, n["images"])  # up to 8 media per template, shared frames
    centres = rng.standard_normal((n_gal, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    features = rng.standard_normal((n["images"], dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    features += np.float32(signal) * centres[subject[t_of_image]]
    features *= rng.uniform(0.1, 1.0, (n["images"], 1)).astype(np.float32)  # faceness weights
    n_gen = min(n["genuine"], n_probe)
    probe = n_gal + np.concatenate([rng.permutation(n_probe)[:n_gen], rng.integers(0, n_probe, n["pairs"] - n_gen)])
    gallery = subject[probe].copy()
    gallery[n_gen:] = (gallery[n_gen:] + 1 + rng.integers(0, n_gal - 1, n["pairs"] - n_gen)) % n_gal
    labels = np.zeros(n["pairs"], dtype=np.int8)
    labels[:n_gen] = 1
    order = rng.permutation(n["pairs"])
    return features, templates, medias, tids[gallery[order]], tids[probe[order]], labels[order]


def reference_templates(features, templates, medias):
    """insightface ``image2template_feature``: per template, mean within media, sum of media, L2 norm."""
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), features.shape[1]), dtype=features.dtype)
    for count, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_feats = features[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_feats += [face_feats[ind_m]]
            else:
                media_feats += [np.mean(face_feats[ind_m], axis=0, keepdims=True)]
        template_feats[count] = np.sum(np.concatenate(media_feats), axis=0)
    norms = np.sqrt(np.sum(template_feats ** 2, -1, keepdims=True))
    return unique_templates, template_feats / norms


def reference_scores(unique_templates, template_feats, p1, p2, batch_size=100_000):
    """insightface ``verification``: template id -> row table, scores in batches of 100k pairs."""
    template2id = np.zeros(max(unique_templates) + 1, dtype=np.int64)
    template2id[unique_templates] = np.arange(len(unique_templates))
    score = np.zeros(len(p1), dtype=np.float32)
    for start in range(0, len(p1), batch_size):
        s = slice(start, start + batch_size)
        feat1 = template_feats[template2id[p1[s]]]
        feat2 = template_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def reference_tar(scores, labels, fars=IJB_FARS):
    """insightface read-off: sklearn roc_curve, flip, nearest-FPR vertex."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return {far: float(tpr[np.argmin(np.abs(fpr - far))]) for far in fars}


def run(scale, dim, seed):
    features, templates, medias, t1, t2, labels = synthetic_ijb(scale, dim, seed)
    print(f"images {len(features):,}  templates {len(np.unique(templates)):,}  pairs {len(t1):,}  "
          f"genuine {int(labels.sum()):,}  dim {dim}", flush=True)
    times = {}
    t0 = time.perf_counter()
    tids, feats = pool_templates(features, templates, medias)
    t1_ = time.perf_counter()
    scores = score_pairs(tids, feats, t1, t2)
    t2_ = time.perf_counter()
    ours = tar_at_far(scores, labels)
    t3_ = time.perf_counter()
    times["ours"] = {"pool": t1_ - t0, "score": t2_ - t1_, "tar": t3_ - t2_}

    t0 = time.perf_counter()
    ref_tids, ref_feats = reference_templates(features, templates, medias)
    t1_ = time.perf_counter()
    ref_scores = reference_scores(ref_tids, ref_feats, t1, t2)
    t2_ = time.perf_counter()
    ref = reference_tar(ref_scores, labels)
    t3_ = time.perf_counter()
    times["reference"] = {"pool": t1_ - t0, "score": t2_ - t1_, "tar": t3_ - t2_}

    for name, t in times.items():
        print(f"{name:>9}: pool {t['pool']:7.2f} s  score {t['score']:7.2f} s  TAR {t['tar']:6.2f} s  "
              f"total {sum(t.values()):7.2f} s")
    ratio = sum(times["reference"].values()) / sum(times["ours"].values())
    stages = ((times["reference"]["pool"] + times["reference"]["score"])
              / (times["ours"]["pool"] + times["ours"]["score"]))
    print(f"speed-up: {ratio:.1f}x whole pipeline, {stages:.1f}x pooling + scoring   "
          f"max |score difference| {np.abs(scores - ref_scores).max():.2e}   "
          f"max |template difference| {np.abs(feats - ref_feats).max():.2e}")
    print("TAR@FAR  " + "  ".join(f"{far:g}: ours {ours[far]:.6f} ref {ref[far]:.6f}" for far in IJB_FARS))
    assert np.array_equal(tids, ref_tids)
    assert ours == ref, f"TARs differ: {ours} vs {ref}"
    return ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's sizes (1.0 = full)")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.scale, args.dim, args.seed)


if __name__ == "__main__":
    main()
