"""AffectNet miniature copy (paper §4.4; shared/research/anchors_recog_au_emotion.md §5.1).

``Manually_Annotated_file_lists/training.csv`` and ``validation.csv`` with the header
``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal``;
``subDirectory_filePath`` = ``<subfolder>/<file>.jpg`` relative to ``Manually_Annotated_Images/``; the face
box is (x, y, w, h) in the image; ``facial_landmarks`` = 68 points ``x1;y1;x2;y2;…`` (136 numbers).
Expression codes 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None,
9 Uncertain, 10 No-Face; valence / arousal in [-1, 1], **-2** for Uncertain and No-Face. Both files carry a
few rows of codes 8, 9 and 10 (a No-Face image is background only). Codes 0–7, valence and arousal come
from ``emotion.aus_to_emotion`` of the AUs the face was rendered with.

``layout`` in the dataset's config picks the release written: ``csv`` (default, above), ``npy`` (the
per-image release, ``emotion/affectnet.py``: ``train_set/`` / ``val_set/`` with ``images/<id>.jpg`` = the
square of side max(w, h) centred on the CSV face box (to half a pixel; black outside the photo), as the real
release's square crops, and ``annotations/<id>_{exp,val,aro}.npy`` as 0-d unicode strings plus ``<id>_lnd.npy``,
136 floats in the crop's pixels; ``<id>`` = the row's position in its CSV list) or ``both`` (the same renders
in both layouts under one root).
"""
import hashlib
import io
import os

import numpy as np

from common.synthetic import emotion
from common.synthetic.writers import canvas
from common.synthetic.writers.files import save_image, write_bytes, write_text
from common.synthetic.writers.sampling import (canvas_shape, draw_expression, draw_pose, identity,
                                               render_in_canvas, rng_for, template_landmarks)

FOLDER = "AffectNet"
HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
_TRAIN_WEIGHTS = np.array([0.24, 0.32, 0.1, 0.07, 0.05, 0.05, 0.1, 0.07])  # skewed like training.csv
NPY_SPLITS = {"training": "train_set", "validation": "val_set"}
LAYOUTS = ("csv", "npy", "both")


def _layout(cfg):
    """The release layout the config asks for (``csv`` unless ``layout`` says otherwise)."""
    layout = cfg.get("layout", "csv")
    if layout not in LAYOUTS:
        raise ValueError(f"affectnet layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def _npy_bytes(array):
    """``np.save`` bytes of ``array`` (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _square_crop(photo, box):
    """(the square of side max(w, h) centred on ``box`` = (x0, y0, x1, y1), zero outside ``photo``, its origin)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1)
    left, top = x0 - (side - (x1 - x0)) // 2, y0 - (side - (y1 - y0)) // 2
    crop = np.zeros((side, side) + photo.shape[2:], photo.dtype)
    part = canvas.crop(photo, left, top, left + side, top + side)
    crop[max(0, -top):max(0, -top) + part.shape[0], max(0, -left):max(0, -left) + part.shape[1]] = part
    return crop, (left, top)


def _write_npy_sample(out, job, photo, box, points, labels):
    """The per-image release's files of one row: the square face crop and its four annotation arrays."""
    split_dir = os.path.join(out, FOLDER, NPY_SPLITS[job["split"]])
    crop, origin = _square_crop(photo, box)
    save_image(os.path.join(split_dir, "images", f"{job['id']}.jpg"), crop)
    arrays = {"exp": np.array(str(labels[0])), "val": np.array(labels[1]), "aro": np.array(labels[2]),
              "lnd": (points - origin).reshape(-1)}
    for name, array in arrays.items():
        write_bytes(os.path.join(split_dir, "annotations", f"{job['id']}_{name}.npy"), _npy_bytes(array))


def plan_affectnet(cfg, seed):
    rng = rng_for(seed, "affectnet", "plan")
    jobs = []
    for split, count in (("training", cfg["train"]), ("validation", cfg["val"])):
        codes = (rng.choice(8, count, p=_TRAIN_WEIGHTS) if split == "training" else np.arange(count) % 8)
        codes[-3:] = (8, 9, 10)                                              # rows the loaders must mask
        for i, code in enumerate(codes):
            name = hashlib.sha1(f"{seed}/{split}/{i}".encode()).hexdigest()[:32]
            jobs.append({"key": f"{split}/{i}", "id": i, "split": split, "code": int(code),
                         "path": f"{int(rng.integers(1, 12))}/{name}.jpg"})
    return jobs


def make_affectnet(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "affectnet", job["key"])
    code = job["code"]
    shape = canvas_shape(rng, (ctx.size, ctx.size), ctx.size, jitter=(1.1, 1.5))
    if code == 10:                                                           # No-Face: background only
        photo = canvas.clutter(rng, *shape)
        points = template_landmarks(ctx, ctx.size * 0.6) + rng.uniform(0, min(shape) - 0.6 * ctx.size, 2)
        expression, valence, arousal = 10, -2.0, -2.0
    else:
        if code <= 7:
            _, _, aus = draw_expression(rng, expression=code, intensity=(2.0, 5.0))
        else:                                                                # None / Uncertain: a blend of two
            _, _, first = draw_expression(rng, neutral_prob=0.0, intensity=(1.5, 3.5))
            _, _, second = draw_expression(rng, neutral_prob=0.0, intensity=(1.5, 3.5))
            aus = {au: max(first.get(au, 0.0), second.get(au, 0.0)) for au in set(first) | set(second)}
        photo, res, offset = render_in_canvas(ctx, identity(ctx, "affectnet", job["key"]), aus,
                                              draw_pose(rng, max_yaw=50.0, pitch_sd=10.0), rng, shape,
                                              scale=float(rng.uniform(0.85, 1.05)), occluder=bool(rng.random() < 0.1))
        points = res.landmarks.astype(np.float64) + offset
        expression, valence, arousal = emotion.aus_to_emotion(aus)
        if code >= 8:
            expression = code
            valence, arousal = (valence, arousal) if code == 8 else (-2.0, -2.0)
    layout = _layout(cfg)
    if layout != "npy":
        save_image(os.path.join(out, FOLDER, "Manually_Annotated_Images", job["path"]), photo)
    extent = np.ptp(points, 0)                                               # face box: landmarks + forehead
    x0, y0 = np.floor(points.min(0) - extent * (0.05, 0.25))
    x1, y1 = np.ceil(points.max(0) + extent * 0.05)
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(photo.shape[1] - 1, int(x1)), min(photo.shape[0] - 1, int(y1))
    if layout != "csv":
        labels = (int(expression), f"{float(valence):.6f}", f"{float(arousal):.6f}")   # the CSV's text
        _write_npy_sample(out, job, photo, (x0, y0, x1, y1), points, labels)
    return {"row": f"{job['path']},{x0},{y0},{x1 - x0},{y1 - y0},"
                   + ";".join(f"{v:.2f}" for v in points.reshape(-1))
                   + f",{int(expression)},{float(valence):.6f},{float(arousal):.6f}"}


def finish_affectnet(out, cfg, jobs, records, seed):
    layout = _layout(cfg)
    if layout != "npy":
        for split in ("training", "validation"):
            rows = [r["row"] for j, r in zip(jobs, records) if j["split"] == split]
            write_text(os.path.join(out, FOLDER, "Manually_Annotated_file_lists", f"{split}.csv"), [HEADER] + rows)
    info = {"images": len(jobs), "training": cfg["train"], "validation": cfg["val"]}
    return info if layout == "csv" else {**info, "layout": layout}                # default manifest unchanged
