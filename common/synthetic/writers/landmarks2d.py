"""300W and WFLW miniature copies (paper §4.2; shared/research/anchors_landmarks_3d.md §1.1, §1.3).

300W (§1.1): folders ``afw/``, ``helen/{trainset,testset}/``, ``lfpw/{trainset,testset}/``, ``ibug/`` and
the private test set ``300W/01_Indoor``, ``300W/02_Outdoor``; every image (.jpg, or .png for lfpw and
the private set) has a sibling ``.pts``: ``version: 1`` / ``n_points:  68`` / ``{`` / 68 ``x y`` lines /
``}``, coordinates **1-based** (Matlab; menpo subtracts 1). Splits: train = afw + helen/trainset +
lfpw/trainset, common = helen/testset + lfpw/testset, challenging = ibug, private = Indoor + Outdoor.
iBUG's file-name quirk ``image_092 _01.jpg`` (a space) is reproduced. ``Bounding Boxes/
bounding_boxes_<set>.mat`` hold ``bounding_boxes`` (1×N cell of structs ``imgName``, ``bb_detector``,
``bb_ground_truth`` = [x1 y1 x2 y2], 1-based); as in the real files, the ibug one also lists AFW entries.

WFLW (§1.3): ``WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt``,
one face per line, space separated: 196 coordinates x0 y0 … x97 y97, the rect x_min y_min x_max y_max
(integers), 6 attributes (pose, expression, illumination, make-up, occlusion, blur), the image path
relative to ``WFLW_images/``. ``WFLW_annotations/list_98pt_test/list_98pt_test{,_largepose,_expression,
_illumination,_makeup,_occlusion,_blur}.txt``: 196 coordinates + image path. Coordinates are 0-based
pixel centres (no other convention is documented). One test image holds two faces (two lines).
"""
import os

import numpy as np

from common.synthetic.writers import canvas, markups
from common.synthetic.writers.files import save_image, save_mat, cell, write_text
from common.synthetic.writers.sampling import (canvas_shape, draw_expression, draw_pose, identity,
                                               render_in_canvas, render_inside, rng_for)

FOLDER_300W = "300W"
FOLDER_WFLW = "WFLW"

# (folder, preset key, bounding-box file set, hard?)
_PARTS_300W = (("afw", "afw", "afw", False), ("helen/trainset", "helen_trainset", "helen_trainset", False),
               ("lfpw/trainset", "lfpw_trainset", "lfpw_trainset", False),
               ("helen/testset", "helen_testset", "helen_testset", False),
               ("lfpw/testset", "lfpw_testset", "lfpw_testset", False), ("ibug", "ibug", "ibug", True),
               ("300W/01_Indoor", "indoor", None, True), ("300W/02_Outdoor", "outdoor", None, True))
_SPLITS_300W = {"train": ("afw", "helen/trainset", "lfpw/trainset"), "common": ("helen/testset", "lfpw/testset"),
                "challenging": ("ibug",), "private": ("300W/01_Indoor", "300W/02_Outdoor")}


def _name_300w(rng, folder, i):
    """A file name in the style of each 300W source set."""
    if folder in ("afw", "helen/trainset", "helen/testset"):
        return f"{int(rng.integers(10**7, 4 * 10**9))}_{int(rng.integers(1, 4))}.jpg"
    if folder.startswith("lfpw"):
        return f"image_{i + 1:04d}.png"
    if folder == "ibug":
        return "image_092 _01.jpg" if i == 1 else f"image_{3 + 7 * i:03d}_{int(rng.integers(1, 3))}.jpg"
    return f"{'indoor' if 'Indoor' in folder else 'outdoor'}_{i + 1:03d}.png"


def plan_300w(cfg, seed):
    rng = rng_for(seed, "300w", "names")
    return [{"key": f"{folder}/{i}", "folder": folder, "file": _name_300w(rng, folder, i), "bbox_set": bset,
             "hard": hard} for folder, count_key, bset, hard in _PARTS_300W for i in range(cfg[count_key])]


def _pts_lines(points):
    """A 300W ``.pts`` file for 0-based points (written 1-based)."""
    return (["version: 1", f"n_points:  {len(points)}", "{"]
            + [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points] + ["}"])


def make_300w(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "300w", job["key"])
    hard = job["hard"]
    pose = draw_pose(rng, max_yaw=60.0 if hard else 35.0, pitch_sd=10.0 if hard else 6.0)
    _, _, aus = draw_expression(rng, neutral_prob=0.2 if hard else 0.4, intensity=(2.0, 5.0) if hard else (1.0, 3.5))
    occluder = bool(hard and rng.random() < 0.3)
    photo, res, offset = render_in_canvas(ctx, identity(ctx, "300w", job["key"]), aus, pose, rng,
                                          canvas_shape(rng, cfg["canvas"], ctx.size),
                                          scale=float(rng.uniform(0.8, 1.05)), occluder=occluder)
    points = res.landmarks.astype(np.float64) + offset
    path = os.path.join(out, FOLDER_300W, job["folder"], job["file"])
    save_image(path, photo)
    write_text(os.path.splitext(path)[0] + ".pts", _pts_lines(points))
    gt = np.concatenate([points.min(0), points.max(0)]) + 1.0
    detector = (np.asarray(res.box, np.float64) + np.tile(offset, 2) + rng.normal(0, 0.03 * ctx.size, 4)) + 1.0
    return {"gt_box": gt, "det_box": np.round(detector)}


def finish_300w(out, cfg, jobs, records, seed):
    sets = {}
    for job, rec in zip(jobs, records):
        if job["bbox_set"] is not None:
            sets.setdefault(job["bbox_set"], []).append({"imgName": job["file"], "bb_detector": rec["det_box"][None],
                                                         "bb_ground_truth": rec["gt_box"][None]})
    sets["ibug"] = sets.get("ibug", []) + sets.get("afw", [])[:2]          # the real ibug file lists AFW entries too
    for name, entries in sets.items():
        save_mat(os.path.join(out, FOLDER_300W, "Bounding Boxes", f"bounding_boxes_{name}.mat"),
                 {"bounding_boxes": cell(entries, column=False)})
    counts = {split: sum(j["folder"] in folders for j in jobs) for split, folders in _SPLITS_300W.items()}
    return {"images": len(jobs), "splits": counts}


_EVENTS = ("0--Parade", "2--Demonstration", "12--Group", "20--Family_Group", "51--Dresses")
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
_SUBSET_FILES = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")


def plan_wflw(cfg, seed):
    rng = rng_for(seed, "wflw", "names")
    jobs = []
    for split in ("train", "test"):
        for i in range(cfg[split]):
            event = _EVENTS[int(rng.integers(len(_EVENTS)))]
            number, word = event.split("--")
            flags = (rng.random(6) < 0.15).astype(int)
            if split == "test":
                flags[i % 6] = 1                                             # every attribute subset is non-empty
            serial = 4 * len(jobs) + int(rng.integers(4))                    # unique over both splits
            jobs.append({"key": f"{split}/{i}", "split": split, "flags": flags.tolist(),
                         "faces": 2 if (split == "test" and i == 0) else 1,
                         "path": f"{event}/{number}_{word}_{word.lower()}_{number}_{serial}.jpg"})
    return jobs


def make_wflw(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "wflw", job["key"])
    flags = np.asarray(job["flags"])
    halves, faces = [], []
    for f in range(job["faces"]):
        pose = draw_pose(rng, min_yaw=45.0, max_yaw=70.0) if flags[0] else draw_pose(rng, max_yaw=30.0)
        _, _, aus = (draw_expression(rng, neutral_prob=0.0, intensity=(3.5, 5.0)) if flags[1]
                     else draw_expression(rng, neutral_prob=0.6, intensity=(0.0, 1.5)))
        res = render_inside(ctx, identity(ctx, "wflw", f"{job['key']}/{f}"), aus, pose, rng,
                            scale=float(rng.uniform(0.8, 1.0)), occluder=bool(flags[4]))
        photo, offset = canvas.place(rng, canvas_shape(rng, cfg["canvas"], ctx.size), res.image)
        points = markups.convert(res.landmarks, 98) + offset
        if flags[3]:                                                         # make-up: lipstick on the outer lip
            photo = canvas.tint_polygon(photo, points[76:88], (170, 20, 60), 0.5)
        box = np.asarray(res.box, np.float64) + np.tile(offset, 2) + rng.normal(0, 0.02 * ctx.size, 4)
        faces.append({"points": points + [sum(h.shape[1] for h in halves), 0], "rect": np.round(box).astype(int)})
        faces[-1]["rect"][[0, 2]] += sum(h.shape[1] for h in halves)
        halves.append(photo)
    height = max(h.shape[0] for h in halves)
    photo = np.concatenate([np.pad(h, ((0, height - h.shape[0]), (0, 0), (0, 0)), mode="edge") for h in halves], 1)
    if flags[2]:
        photo = canvas.illumination(photo, *((0.45, 1.6) if rng.random() < 0.5 else (1.3, 0.6)))
    if flags[5]:
        photo = canvas.blur(photo, 0.012 * ctx.size + 1.0)
    save_image(os.path.join(out, FOLDER_WFLW, "WFLW_images", job["path"]), photo)
    return {"faces": faces}


def finish_wflw(out, cfg, jobs, records, seed):
    ann = os.path.join(out, FOLDER_WFLW, "WFLW_annotations")
    lines = {"train": [], "test": []}
    subsets = {name: [] for name in ("",) + _SUBSET_FILES}
    for job, rec in zip(jobs, records):
        for face in rec["faces"]:
            coords = " ".join(f"{v:.6f}" for v in face["points"].reshape(-1))
            rect = " ".join(str(int(v)) for v in face["rect"])
            lines[job["split"]].append(f"{coords} {rect} {' '.join(map(str, job['flags']))} {job['path']}")
            if job["split"] == "test":
                subsets[""].append(f"{coords} {job['path']}")
                for name, flag in zip(_SUBSET_FILES, job["flags"]):
                    if flag:
                        subsets[name].append(f"{coords} {job['path']}")
    for split, split_lines in lines.items():
        write_text(os.path.join(ann, "list_98pt_rect_attr_train_test", f"list_98pt_rect_attr_{split}.txt"), split_lines)
    for name, sub_lines in subsets.items():
        write_text(os.path.join(ann, "list_98pt_test", f"list_98pt_test{'_' + name if name else ''}.txt"), sub_lines)
    return {"images": len(jobs), "faces": {s: len(v) for s, v in lines.items()},
            "test_subsets": {n: len(v) for n, v in subsets.items() if n}}
