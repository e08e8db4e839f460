"""VGGFace2 and IJB-B / IJB-C miniature copies (paper §4.1; shared/research/anchors_recog_au_emotion.md §1.1, §2).

VGGFace2 (§2): identity folders ``train/n000001/0001_01.jpg`` (``<imageID>_<faceID>.jpg``), test identities
disjoint from train; ``train_list.txt`` / ``test_list.txt`` (one relative path per line); ``meta/
identity_meta.csv`` (header ``Class_ID, Name, Sample_Num, Flag, Gender``; Flag 1 = train, 0 = test);
``bb_landmark/loose_bb_{train,test}.csv`` (header ``NAME_ID,X,Y,W,H``) and ``bb_landmark/loose_landmark_
{train,test}.csv`` (header ``NAME_ID,P1X,P1Y,…,P5Y``), ``NAME_ID`` quoted and without extension, coordinates
in the loose crop, points in MTCNN order (left eye, right eye, nose, left and right mouth corner,
image-left first). Images are loose crops of varying size.

IJB-B / IJB-C (§1.1): ``loose_crop/1.jpg … N.jpg`` and, in ``meta/`` (space separated, no header),
``ijbb_face_tid_mid.txt`` (``image template_id media_id``), ``ijbb_template_pair_label.txt`` (``tid1 tid2
label``, 1 = genuine, 0 = impostor) and ``ijbb_name_5pts_score.txt`` (``image x1 y1 … x5 y5 score``, row i
aligned with row i of ``face_tid_mid``; score = detector faceness); ``ijbc_`` for IJB-C. Template and media
ids are not contiguous; a video media holds several frames. IJB subjects use their own identity
namespaces, so they are disjoint from the VGGFace2 training identities.
"""
import os

import numpy as np

from common.synthetic.writers import canvas
from common.synthetic.writers.files import save_image, write_text
from common.synthetic.writers.sampling import draw_expression, draw_pose, identity, render_inside, rng_for

FOLDER_VGGFACE2 = "VGGFace2"
FOLDERS_IJB = {"ijbb": "IJBB", "ijbc": "IJBC"}


def _loose_crop(ctx, rng, ident, aus, pose, occluder=False):
    """A loose face crop of varying size: (image, face box [x, y, w, h], (5, 2) points), crop pixels."""
    res = render_inside(ctx, ident, aus, pose, rng, scale=float(rng.uniform(0.5, 0.65)), occluder=occluder)
    x1, y1, x2, y2 = np.asarray(res.box, np.float64)
    w, h = x2 - x1, y2 - y1
    left, top = int(max(0, x1 - rng.uniform(0.3, 0.6) * w)), int(max(0, y1 - rng.uniform(0.3, 0.6) * h))
    right = int(min(ctx.size, np.ceil(x2 + rng.uniform(0.3, 0.6) * w)))
    bottom = int(min(ctx.size, np.ceil(y2 + rng.uniform(0.3, 0.6) * h)))
    image = canvas.crop(res.image, left, top, right, bottom)
    five = np.asarray(res.five_points, np.float64) - [left, top]
    return image, np.array([x1 - left, y1 - top, w, h]), five


def plan_vggface2(cfg, seed):
    rng = rng_for(seed, "vggface2", "plan")
    n_ids = cfg["train_ids"] + cfg["test_ids"]
    numbers = np.sort(rng.choice(np.arange(1, 3 * n_ids + 1), n_ids, replace=False))
    test = set(rng.choice(numbers, cfg["test_ids"], replace=False).tolist())
    jobs = []
    for number in numbers:
        image_ids = np.cumsum(rng.integers(1, 30, cfg["per_id"]))
        for image_id in image_ids:
            face = 2 if rng.random() < 0.1 else 1
            cls = f"n{number:06d}"
            jobs.append({"key": f"{cls}/{image_id:04d}_{face:02d}", "class": cls,
                         "split": "test" if number in test else "train"})
    return jobs


def make_vggface2(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "vggface2", job["key"])
    _, _, aus = draw_expression(rng, neutral_prob=0.4)
    image, box, five = _loose_crop(ctx, rng, identity(ctx, "vggface2", job["class"]), aus,
                                   draw_pose(rng, max_yaw=70.0, pitch_sd=10.0), occluder=bool(rng.random() < 0.1))
    save_image(os.path.join(out, FOLDER_VGGFACE2, job["split"], job["key"] + ".jpg"), image)
    return {"box": box, "five": five}


def finish_vggface2(out, cfg, jobs, records, seed):
    root = os.path.join(out, FOLDER_VGGFACE2)
    meta = ["Class_ID, Name, Sample_Num, Flag, Gender"]
    for split in ("train", "test"):
        mine = [(j, r) for j, r in zip(jobs, records) if j["split"] == split]
        write_text(os.path.join(root, f"{split}_list.txt"), [j["key"] + ".jpg" for j, _ in mine])
        write_text(os.path.join(root, "bb_landmark", f"loose_bb_{split}.csv"),
                   ["NAME_ID,X,Y,W,H"] + [f'"{j["key"]}",' + ",".join(str(int(round(v))) for v in r["box"])
                                          for j, r in mine])
        write_text(os.path.join(root, "bb_landmark", f"loose_landmark_{split}.csv"),
                   ["NAME_ID," + ",".join(f"P{k}X,P{k}Y" for k in range(1, 6))]
                   + [f'"{j["key"]}",' + ",".join(f"{v:.7g}" for v in r["five"].reshape(-1)) for j, r in mine])
    classes = sorted({(j["class"], j["split"]) for j in jobs})
    for cls, split in classes:
        gender = "m" if rng_for(seed, "vggface2", "gender", cls).random() < 0.5 else "f"
        count = sum(j["class"] == cls for j in jobs)
        meta.append(f'{cls}, "Synthetic_Person_{cls}", {count}, {int(split == "train")}, {gender}')
    write_text(os.path.join(root, "meta", "identity_meta.csv"), meta)
    return {"images": len(jobs), "train_identities": cfg["train_ids"], "test_identities": cfg["test_ids"]}


def plan_ijb(variant, cfg, seed):
    """Subjects -> templates -> media (a still, or a short video) -> images named 1.jpg ... N.jpg."""
    rng = rng_for(seed, variant, "plan")
    jobs, tid = [], 0
    media_ids = rng.choice(np.arange(1, 200000), 10 * cfg["subjects"] * cfg["max_templates"], replace=False)
    mid_iter = iter(media_ids.tolist())
    for subject in range(cfg["subjects"]):
        for _ in range(int(rng.integers(2, cfg["max_templates"] + 1))):
            tid += int(rng.integers(1, 12))
            for _ in range(int(rng.integers(1, 3))):
                mid = next(mid_iter)
                frames = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
                for frame in range(frames):
                    jobs.append({"key": str(len(jobs) + 1), "subject": subject, "tid": tid, "mid": mid,
                                 "frame": frame, "low": bool(rng.random() < 0.08)})
    return jobs


def _pairs(variant, cfg, seed, jobs):
    """Every genuine template pair and ``impostor_per_genuine`` times as many impostor pairs, shuffled."""
    rng = rng_for(seed, variant, "pairs")
    templates = sorted({(j["tid"], j["subject"]) for j in jobs})
    genuine = [(a, b, 1) for i, (a, sa) in enumerate(templates) for b, sb in templates[i + 1:] if sa == sb]
    impostor = [(a, b, 0) for i, (a, sa) in enumerate(templates) for b, sb in templates[i + 1:] if sa != sb]
    keep = np.sort(rng.permutation(len(impostor))[:cfg["impostor_per_genuine"] * len(genuine)])
    pairs = genuine + [impostor[k] for k in keep]
    return [pairs[k] for k in rng.permutation(len(pairs))]


def make_ijb(variant, ctx, out, cfg, job):
    media_rng = rng_for(ctx.seed, variant, "media", job["mid"])              # frames of a video share it
    yaw, pitch, roll = draw_pose(media_rng, max_yaw=75.0, pitch_sd=12.0)
    _, _, aus = draw_expression(media_rng, neutral_prob=0.4)
    rng = rng_for(ctx.seed, variant, job["key"])
    pose = (yaw + 4.0 * job["frame"], pitch + rng.normal(0, 1.0), roll + rng.normal(0, 1.0))
    image, _, five = _loose_crop(ctx, rng, identity(ctx, variant, job["subject"]), aus, pose, occluder=job["low"])
    if job["low"]:
        image = canvas.blur(image, 0.02 * ctx.size + 1.0)
    save_image(os.path.join(out, FOLDERS_IJB[variant], "loose_crop", job["key"] + ".jpg"), image)
    score = rng.uniform(0.05, 0.5) if job["low"] else rng.uniform(0.9, 1.0)
    return {"five": five, "score": float(score)}


def finish_ijb(variant, out, cfg, jobs, records, seed):
    meta = os.path.join(out, FOLDERS_IJB[variant], "meta")
    write_text(os.path.join(meta, f"{variant}_face_tid_mid.txt"),
               [f"{j['key']}.jpg {j['tid']} {j['mid']}" for j in jobs])
    write_text(os.path.join(meta, f"{variant}_name_5pts_score.txt"),
               [f"{j['key']}.jpg " + " ".join(f"{v:.3f}" for v in r["five"].reshape(-1)) + f" {r['score']:.3f}"
                for j, r in zip(jobs, records)])
    pairs = _pairs(variant, cfg, seed, jobs)
    write_text(os.path.join(meta, f"{variant}_template_pair_label.txt"), [f"{a} {b} {label}" for a, b, label in pairs])
    return {"images": len(jobs), "subjects": cfg["subjects"], "templates": len({j["tid"] for j in jobs}),
            "genuine_pairs": sum(p[2] for p in pairs), "impostor_pairs": sum(1 - p[2] for p in pairs)}
