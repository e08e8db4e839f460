"""AFLW-19 and COFW-68 miniature copies (paper §4.2; shared/research/anchors_landmarks_3d.md §1.2, §1.4).

AFLW-19 (§1.4): ``AFLWinfo_release.mat`` with ``bbox`` (N×4, [left right top bottom]), ``data`` (N×38:
x1…x19 then y1…y19), ``mask_new`` (N×19, 1 = visible), ``nameList`` (N×1 cell of paths relative to
``data/flickr/``) and ``ra`` (1×N, a **1-based** permutation); images ``data/flickr/{0,2,3}/imageNNNNN.jpg``.
Split: train = ra[:n_train] − 1, test = ra[n_train:] − 1 (the real n_train is 20000; the miniature's is in
``manifest.json``), "frontal" = test faces with all 19 points visible. Coordinates are written as
0-based pixel centres: FaRL (``farl/datasets/aflw.py``) reads them with no offset.

COFW-68 (§1.2): ``COFW68_Data/test_annotations/{i}_points.mat`` (i = 1…N) with ``Points`` (68×2 float64)
and ``Occ`` (1×68 uint8, 1 = occluded); ``COFW68_Data/cofw68_test_bboxes.mat`` with ``bboxes`` (N×4,
[x y w h]); image i is ``IsT{i}`` of ``COFW_test.mat`` (grayscale release), which also holds ``phisT``
(N×87: 29 x, 29 y, 29 occlusion flags, COFW-29) and ``bboxesT``. Points are written **1-based** (Matlab
image coordinates). Deviation: the real COFW ``.mat`` may be MATLAB v7.3 (HDF5); we write v5 (scipy).
"""
import os

import numpy as np
from PIL import Image

from common.synthetic.writers import markups
from common.synthetic.writers.files import cell, save_image, save_mat
from common.synthetic.writers.sampling import (canvas_shape, draw_expression, draw_pose, identity,
                                               render_in_canvas, rng_for)

FOLDER_AFLW = "AFLW"
FOLDER_COFW = "COFW68"


def _ra(cfg, seed):
    """The 1-based permutation ``ra``: train = ra[:n_train] - 1, test = ra[n_train:] - 1."""
    return rng_for(seed, "aflw19", "ra").permutation(cfg["train"] + cfg["test"]) + 1


def plan_aflw19(cfg, seed):
    rng = rng_for(seed, "aflw19", "plan")
    ra = _ra(cfg, seed)
    n = len(ra)
    role = np.empty(n, dtype=object)
    role[ra[:cfg["train"]] - 1] = "train"
    for rank, index in enumerate(ra[cfg["train"]:] - 1):                     # test: frontal / profile alternate
        role[index] = "frontal" if rank % 2 == 0 else "profile"
    ids = np.cumsum(rng.integers(1, 40, n)) + 1
    folders = rng.choice(["0", "2", "3"], n)
    return [{"key": str(i), "role": role[i], "name": f"{folders[i]}/image{ids[i]:05d}.jpg"} for i in range(n)]


def make_aflw19(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "aflw19", job["key"])
    role = job["role"]
    pose = {"train": lambda: draw_pose(rng, max_yaw=70.0), "frontal": lambda: draw_pose(rng, max_yaw=10.0, roll_sd=3.0),
            "profile": lambda: draw_pose(rng, min_yaw=50.0, max_yaw=75.0)}[role]()
    _, _, aus = draw_expression(rng, neutral_prob=0.4, intensity=(1.0, 4.0))
    photo, res, offset = render_in_canvas(ctx, identity(ctx, "aflw19", job["key"]), aus, pose, rng,
                                          canvas_shape(rng, cfg["canvas"], ctx.size),
                                          scale=float(rng.uniform(0.8, 1.0)))
    save_image(os.path.join(out, FOLDER_AFLW, "data", "flickr", job["name"]), photo)
    points = markups.convert(res.landmarks, 19) + offset
    visible = markups.convert_visibility(res.visible, 19)
    x1, y1, x2, y2 = np.round(np.asarray(res.box, np.float64) + np.tile(offset, 2) + rng.normal(0, 0.02 * ctx.size, 4))
    return {"data": np.concatenate([points[:, 0], points[:, 1]]), "mask": visible.astype(np.float64),
            "bbox": np.array([x1, x2, y1, y2], dtype=np.float64)}


def finish_aflw19(out, cfg, jobs, records, seed):
    mat = {"bbox": np.stack([r["bbox"] for r in records]), "data": np.stack([r["data"] for r in records]),
           "mask_new": np.stack([r["mask"] for r in records]), "nameList": cell([j["name"] for j in jobs]),
           "ra": _ra(cfg, seed)[None, :].astype(np.float64)}
    save_mat(os.path.join(out, FOLDER_AFLW, "AFLWinfo_release.mat"), mat)
    test = [r for j, r in zip(jobs, records) if j["role"] != "train"]
    return {"images": len(jobs), "train_count": cfg["train"], "test_count": cfg["test"],
            "frontal_count": int(sum(bool(np.all(r["mask"] == 1)) for r in test))}


def plan_cofw68(cfg, seed):
    return [{"key": str(i), "index": i + 1, "occluder": i % 3 != 2} for i in range(cfg["test"])]


def make_cofw68(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "cofw68", job["key"])
    _, _, aus = draw_expression(rng, neutral_prob=0.3, intensity=(1.5, 4.5))
    photo, res, offset = render_in_canvas(ctx, identity(ctx, "cofw68", job["key"]), aus, draw_pose(rng, max_yaw=40.0),
                                          rng, canvas_shape(rng, cfg["canvas"], ctx.size, jitter=(0.85, 1.05)),
                                          scale=float(rng.uniform(0.85, 1.05)), occluder=job["occluder"])
    gray = np.asarray(Image.fromarray(photo).convert("L"))                   # the grayscale COFW release
    points = res.landmarks.astype(np.float64) + offset
    occluded = ~np.asarray(res.visible, dtype=bool)
    save_mat(os.path.join(out, FOLDER_COFW, "COFW68_Data", "test_annotations", f"{job['index']}_points.mat"),
             {"Points": points + 1.0, "Occ": occluded.astype(np.uint8)[None, :]})
    x1, y1, x2, y2 = np.asarray(res.box, np.float64) + np.tile(offset, 2) + rng.normal(0, 0.02 * ctx.size, 4)
    p29 = markups.convert(points, 29) + 1.0
    occ29 = ~markups.convert_visibility(~occluded, 29)
    return {"image": gray, "bbox": np.round([x1 + 1, y1 + 1, x2 - x1, y2 - y1]).astype(np.float64),
            "phis": np.concatenate([p29[:, 0], p29[:, 1], occ29.astype(np.float64)])}


def finish_cofw68(out, cfg, jobs, records, seed):
    bboxes = np.stack([r["bbox"] for r in records])
    save_mat(os.path.join(out, FOLDER_COFW, "COFW68_Data", "cofw68_test_bboxes.mat"), {"bboxes": bboxes})
    save_mat(os.path.join(out, FOLDER_COFW, "COFW_test.mat"),
             {"IsT": cell([r["image"] for r in records]), "phisT": np.stack([r["phis"] for r in records]),
              "bboxesT": bboxes})
    return {"images": len(jobs), "test_count": len(jobs), "occluded_faces": int(sum(j["occluder"] for j in jobs))}
