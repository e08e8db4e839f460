"""Exact and near-duplicate removal for curated face sets, and the redundancy measure behind the
paper's finding (2), "many existing facial video datasets seem to have a large amount of
redundancy" (Abstract, §6).

    python -m pretrain.curate.dedup --images DIR | --list FILE --out DIR [--threshold 0.95]
        [--measure-only] [--embedding thumb|backbone] [--thumb-size 32]
        [--backbone-arch resnet50 --backbone-init CKPT] [--k 10] [--faiss-index Flat]

Exact duplicates: equal sha256 of the file bytes. Near duplicates: cosine similarity of image
embeddings >= threshold among each image's k nearest neighbours (faiss, inner product on
L2-normalised vectors). Duplicates are grouped transitively (connected components); each group
keeps its first path in sorted order. Redundancy of a dataset = the fraction of its samples whose
nearest other sample is at least that similar (reported for several thresholds).
Embedding "thumb" (default, cheap, no model): the grey image shrunk to thumb-size^2 by box
averaging, minus its mean, L2-normalised, i.e. cosine = Pearson correlation of the thumbnails;
re-encodings, resizes and consecutive video frames score ~0.98+, different faces far lower.
Embedding "backbone": the global-pooled features of common.backbone (`--backbone-init` a
checkpoint, e.g. a pre-trained SwAV model), centre 224 crop, ImageNet normalisation.
Writes OUT/report.json, and unless --measure-only OUT/kept.txt (a list for pretrain.train, with
a .sha256 sidecar) and OUT/removed.jsonl (path, duplicate_of, reason, similarity).
"""
import argparse
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from common.files import write_json
from common.logger import log, progress
from pretrain.curate.image_io import list_images

THRESHOLDS = (0.9, 0.95, 0.98, 0.99)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sha256_file(path):
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _load(path, mode, size):
    """The image in `mode`, box-resized to size x size, as float32, or None if unreadable."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode).resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    except (OSError, ValueError, SyntaxError):
        return None


def _map(fn, items, workers, desc=None):
    """fn over items on a thread pool (image decoding releases the GIL), in order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(fn, items)
        return list(progress(results, desc=desc, total=len(items)) if desc else results)


def thumbnail_embeddings(paths, size=32, workers=4):
    """(n, size*size) float32 unit vectors (zero for a flat image), and a readable mask (n,)."""
    thumbs = _map(lambda p: _load(p, "L", size), paths, workers, "thumbnails")
    ok = np.array([t is not None for t in thumbs], dtype=bool)
    x = np.zeros((len(paths), size * size), np.float32)
    if ok.any():
        x[ok] = np.stack([t.ravel() for t in thumbs if t is not None])
    x -= x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 1e-6, x / np.maximum(norm, 1e-6), 0.0).astype(np.float32), ok


def backbone_embeddings(paths, arch="resnet50", init="scratch", batch_size=64, workers=4, device="cpu"):
    """(n, num_features) unit vectors from common.backbone, and a readable mask (n,)."""
    import torch
    from common.backbone import build_backbone
    model = build_backbone(arch, init).eval().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    feats, ok = np.zeros((len(paths), model.num_features), np.float32), np.zeros(len(paths), bool)
    for start in progress(range(0, len(paths), batch_size), desc="embed"):
        imgs = _map(lambda p: _load(p, "RGB", 256), paths[start:start + batch_size], workers)
        idx = [start + i for i, im in enumerate(imgs) if im is not None]
        if not idx:
            continue
        x = torch.from_numpy(np.stack([im for im in imgs if im is not None])).permute(0, 3, 1, 2).to(device)
        with torch.no_grad():
            f = model((x[:, :, 16:240, 16:240] - mean) / std)  # centre 224 of the 256 crop
        feats[idx] = torch.nn.functional.normalize(f, dim=1).cpu().numpy()
        ok[idx] = True
    return feats, ok


def nearest_neighbours(emb, k=10, index_spec="Flat"):
    """(sims (n, k), ids (n, k)) of each row's k most similar other rows (id -1 where none)."""
    import faiss
    n, d = emb.shape
    index = faiss.index_factory(d, index_spec, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(emb)
    index.add(emb)
    sims, ids = index.search(emb, min(k + 1, n))
    self_hit = ids == np.arange(n)[:, None]
    sims, ids = np.where(self_hit, -np.inf, sims), np.where(self_hit, -1, ids)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # drop the self column (or the last)
    sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    return np.where(ids >= 0, sims, -np.inf), ids


def redundancy(nn_sim, thresholds=THRESHOLDS) -> dict:
    """Fraction of samples whose nearest other sample has similarity >= t, for each t."""
    return {f"{t:g}": float(np.mean(nn_sim >= t - 1e-6)) if len(nn_sim) else 0.0 for t in thresholds}


def duplicate_groups(hashes, sims, ids, threshold):
    """Component label per sample, joining equal hashes and neighbours with sim >= threshold."""
    n = len(hashes)
    rows, cols = np.nonzero((sims >= threshold - 1e-6) & (ids >= 0))
    _, first = np.unique(np.asarray(hashes, dtype=object), return_inverse=True)
    rep = np.full(first.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(rep, first, np.arange(n))  # first sample of each hash value
    src = np.concatenate([rows, np.arange(n)])
    dst = np.concatenate([ids[rows, cols], rep[first]])
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def deduplicate(paths, hashes, emb, *, threshold=0.95, k=10, index_spec="Flat"):
    """-> (kept indices, removed records, nearest-neighbour similarity per sample)."""
    sims, ids = nearest_neighbours(emb, k, index_spec) if len(paths) > 1 else (
        np.full((len(paths), 1), -np.inf, np.float32), np.full((len(paths), 1), -1))
    labels = duplicate_groups(hashes, sims, ids, threshold)
    keeper = np.full(labels.max() + 1 if len(labels) else 0, len(paths), dtype=np.int64)
    np.minimum.at(keeper, labels, np.arange(len(paths)))  # paths are sorted: first path of a group
    keep_of = keeper[labels]
    removed = np.flatnonzero(keep_of != np.arange(len(paths)))
    nn_sim = sims[:, 0]
    records = [{"path": paths[i], "duplicate_of": paths[keep_of[i]],
                "reason": "exact" if hashes[i] == hashes[keep_of[i]] else "near",
                "similarity": round(float(nn_sim[i]), 4)} for i in removed]
    return np.flatnonzero(keep_of == np.arange(len(paths))), records, nn_sim


def read_list(path):
    """Paths of a list file (one per line, relative to the file's folder; '#' lines skipped)."""
    base = Path(path).resolve().parent
    with open(path, encoding="utf-8") as f:
        return [str(base / ln.strip()) for ln in f if ln.strip() and not ln.startswith("#")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="image folder (recursive)")
    src.add_argument("--list", help="list file, one image path per line")
    p.add_argument("--out", required=True)
    p.add_argument("--threshold", type=float, default=0.95, help="near-duplicate cosine similarity")
    p.add_argument("--measure-only", action="store_true", help="report redundancy, write no lists")
    p.add_argument("--embedding", choices=("thumb", "backbone"), default="thumb")
    p.add_argument("--thumb-size", type=int, default=32)
    p.add_argument("--backbone-arch", default="resnet50")
    p.add_argument("--backbone-init", default="scratch", help="checkpoint path (or imagenet)")
    p.add_argument("--k", type=int, default=10, help="neighbours searched per sample")
    p.add_argument("--faiss-index", default="Flat", help="faiss index_factory string, e.g. IVF4096,Flat")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.images:
        paths = [str(Path(args.images).resolve() / r) for r in list_images(args.images)]
    elif not os.path.isfile(args.list):
        raise SystemExit(f"--list: file not found: {args.list}")
    else:
        paths = sorted(set(read_list(args.list)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hashes = _map(sha256_file, paths, args.workers, "sha256")
    if args.embedding == "thumb":
        emb, ok = thumbnail_embeddings(paths, args.thumb_size, args.workers)
        name = f"thumb{args.thumb_size}"
    else:
        emb, ok = backbone_embeddings(paths, args.backbone_arch, args.backbone_init, workers=args.workers,
                                      device=args.device)
        name = f"backbone:{args.backbone_arch}:{args.backbone_init}"
    ok &= np.array([h is not None for h in hashes], dtype=bool)
    good = np.flatnonzero(ok)
    paths, hashes, emb = [paths[i] for i in good], [hashes[i] for i in good], emb[good]
    kept, removed, nn_sim = deduplicate(paths, hashes, emb, threshold=args.threshold, k=args.k,
                                        index_spec=args.faiss_index)
    report = {"listed": len(ok), "unreadable": int((~ok).sum()), "n": len(paths), "embedding": name,
              "threshold": args.threshold, "k": args.k,
              "redundancy": redundancy(nn_sim, sorted({*THRESHOLDS, args.threshold})),
              "exact_duplicates": sum(r["reason"] == "exact" for r in removed),
              "near_duplicates": sum(r["reason"] == "near" for r in removed), "kept": len(kept)}
    if not args.measure_only:
        from common.subsample import save_keys
        report["kept_sha256"] = save_keys(out / "kept.txt", [paths[i] for i in kept])
        with open(out / "removed.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in removed)
    write_json(out / "report.json", report)
    log(f"dedup: {report['n']} readable ({report['unreadable']} unreadable); redundancy {report['redundancy']}; "
        f"removed {report['exact_duplicates']} exact + {report['near_duplicates']} near duplicates")
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
