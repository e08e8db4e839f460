"""DISFA and BP4D (FERA 2015) miniature copies (paper §4.3; shared/research/anchors_recog_au_emotion.md §3).

DISFA (§3.1): subjects SN001–SN013, SN016–SN018, SN021, SN023–SN032 (27; the real ids, so the fixed
3-fold subject lists apply); labels ``ActionUnit_Labels/SNnnn/SNnnn_auN.txt`` for N in {1,2,4,5,6,9,12,
15,17,20,25,26}, one line ``frame,intensity`` per frame (comma, no header, integer 0–5, frame numbers
1-based and equal to line index + 1). Deviation: the real set ships videos; we write the frames
``Frames_LeftCamera/SNnnn/<frame>.jpg`` named by the label's frame number.

BP4D / FERA 2015 intensity (§3.2): AUs 6, 10, 12, 14, 17; ``AU Intensity Codes3.0/AUnn/<subject>_<task>_
AUnn.csv``, lines ``frame,intensity`` (no header), codes 0–5 and **9 = not coded** (some frames of the
tiny and demo sets carry it); subjects: FERA2015 train F001…M017 (21) and devel F002…M018 (20);
tasks T1…T8; frames ``BP4D-training/<subject>/<task>/<frame>.jpg`` (devel subjects live in the same folder,
as in the FERA 2015 release; frame numbers do not start at 1) named as the release names them: the number
zero-padded to a width fixed per sequence folder, here 3 or 4 digits (``087.jpg``, ``0612.jpg``;
machanic/AU_R-CNN ``dataset_toolkit/scripts/AU_intensity_index_file_gen.py`` reads the width off each
folder's first file), while the CSVs carry the plain number.

Frames: with ``canvas`` (H, W) in the preset the face render is placed in a larger frame of its plain
background, as the real 1024x768 frames hold the face in a part of the picture (au_intensity/boxes.py
finds it); the render's spot is fixed per sequence and drifts a few pixels with the head. Without it a
frame is the face-centred render. ``synthetic_face_boxes.csv`` in each dataset folder (not part of the
real releases) holds every frame's true face box in au_intensity's box format: ``key,x1,y1,x2,y2``, the
outer edges of the rendered face-region pixels, pixel centres at integers.

Each subject's frames are a short expression sequence (AU intensities ramp up and down around
prototype expressions); the labelled AUs are rendered at exactly their integer label.
"""
import os

import numpy as np

from common.synthetic import emotion, face_model
from common.synthetic.writers.files import save_image, write_text
from common.synthetic.writers.sampling import identity, render_inside, rng_for

FOLDER_DISFA = "DISFA"
FOLDER_BP4D = "BP4D"
TRUTH_BOXES = "synthetic_face_boxes.csv"
DISFA_SUBJECTS = tuple(f"SN{i:03d}" for i in (*range(1, 14), 16, 17, 18, 21, *range(23, 33)))
BP4D_TRAIN = tuple(f"F{i:03d}" for i in range(1, 24, 2)) + tuple(f"M{i:03d}" for i in range(1, 18, 2))
BP4D_DEVEL = tuple(f"F{i:03d}" for i in range(2, 23, 2)) + tuple(f"M{i:03d}" for i in range(2, 19, 2))


def _sequence(rng, frames, labelled):
    """Per-frame AU dicts to render and the (frames, len(labelled)) integer labels they realise.

    One or two episodes rise and fall over the sequence: a prototype expression plus, with probability
    0.35 each, spontaneous labelled AUs at a random peak (the EMFACS prototypes never use e.g. BP4D's
    AU10, 14, 17). Labelled AUs are quantised to integers 0–5 and rendered at exactly that value, others
    keep their float value.
    """
    episodes = 1 if frames < 8 else 2
    t = (np.arange(frames) + 0.5) / frames * episodes
    envelope = np.sin(np.pi * (t % 1.0)) ** 2                                # (frames,), 0 -> 1 -> 0
    episode = np.minimum(t.astype(int), episodes - 1)
    protos = [emotion.prototype_aus(int(rng.integers(1, 8)), float(rng.uniform(3.0, 5.0)), rng)
              for _ in range(episodes)]
    aus = sorted(set(face_model.AUS) | set(labelled) | {au for p in protos for au in p})
    peak = np.array([[float(p.get(au, 0.0)) for au in aus] for p in protos])   # (episodes, n_aus)
    cols = [aus.index(au) for au in labelled]
    spontaneous = rng.uniform(1.0, 5.0, (episodes, len(cols))) * (rng.random((episodes, len(cols))) < 0.35)
    peak[:, cols] = np.maximum(peak[:, cols], spontaneous)
    values = peak[episode] * envelope[:, None] + rng.uniform(0, 0.6, (frames, len(aus)))
    values = np.clip(values, 0.0, 5.0)
    labels = np.rint(values[:, cols]).astype(int)
    values[:, cols] = labels
    return [dict(zip(aus, row.tolist())) for row in values], labels


def _in_frame(render, canvas_hw, rng, frame):
    """``render`` pasted into a ``canvas_hw`` frame of its border colour (with a fixed grain) at a spot drawn
    from ``rng`` (one state per sequence) that drifts with ``frame``; returns (frame image, (dx, dy))."""
    size = render.shape[0]
    room = np.array([canvas_hw[1] - size, canvas_hw[0] - size], dtype=np.float64)
    if (room < 0).any():
        raise ValueError(f"a {size}px render does not fit into a {canvas_hw} canvas")
    spot, phase = rng.uniform(0.2, 0.8, 2) * room, rng.uniform(0.0, 2 * np.pi, 2)
    dx, dy = np.clip(np.rint(spot + 0.1 * room * np.sin(0.3 * frame + phase)), 0, room).astype(int)
    border = np.concatenate([render[0], render[-1], render[:, 0], render[:, -1]])
    grain = rng.normal(0.0, 2.0, (*canvas_hw, 1))
    image = np.clip(np.median(border, axis=0) + grain + 0.5, 0, 255).astype(np.uint8)
    image[dy:dy + size, dx:dx + size] = render
    return image, (dx, dy)


def _render_frame(ctx, cfg, namespace, subject, session, frame, aus):
    """A lab-style video frame and its face box (x1 y1 x2 y2, outer pixel edges): the subject's fixed background
    and light, near-frontal head with a little motion; ``cfg["zoom"]`` (default 1) scales the face in the render,
    as a closer camera would; ``cfg["canvas"]`` places the render in a larger frame (module docstring)."""
    motion = rng_for(ctx.seed, namespace, "motion", subject).uniform(-1, 1, 3) * (15.0, 6.0, 4.0)
    pose = tuple(m * np.sin(0.3 * frame + k) for k, m in enumerate(motion))
    scene = rng_for(ctx.seed, namespace, "scene", session)                   # same state for every frame
    result = render_inside(ctx, identity(ctx, namespace, subject), aus, pose, scene, scale=cfg.get("zoom", 1.0),
                           background="plain")
    box = result.box.astype(np.float64) + (-0.5, -0.5, 0.5, 0.5)            # pixel indices -> outer edges
    if "canvas" not in cfg:
        return result.image, box
    image, offset = _in_frame(result.image, tuple(cfg["canvas"]), rng_for(ctx.seed, namespace, "spot", session),
                              frame)
    return image, box + np.tile(offset, 2)


def _write_truth(path, keys, records):
    """The true face boxes as ``key,x1,y1,x2,y2`` lines (au_intensity.data.read_boxes' format)."""
    write_text(path, [f"{k}," + ",".join(f"{v:.1f}" for v in r["box"]) for k, r in zip(keys, records)])


def plan_disfa(cfg, seed):
    return [{"key": f"{s}/{t + 1}", "subject": s, "frame": t + 1} for s in DISFA_SUBJECTS for t in range(cfg["frames"])]


def _disfa_sequence(seed, subject, frames):
    return _sequence(rng_for(seed, "disfa", "sequence", subject), frames, face_model.AUS_DISFA)


def make_disfa(ctx, out, cfg, job):
    aus, _ = _disfa_sequence(ctx.seed, job["subject"], cfg["frames"])
    image, box = _render_frame(ctx, cfg, "disfa", job["subject"], job["subject"], job["frame"],
                               aus[job["frame"] - 1])
    save_image(os.path.join(out, FOLDER_DISFA, "Frames_LeftCamera", job["subject"], f"{job['frame']}.jpg"), image)
    return {"box": box.tolist()}


def finish_disfa(out, cfg, jobs, records, seed):
    _write_truth(os.path.join(out, FOLDER_DISFA, TRUTH_BOXES), [j["key"] for j in jobs], records)
    for subject in DISFA_SUBJECTS:
        _, labels = _disfa_sequence(seed, subject, cfg["frames"])
        for k, au in enumerate(face_model.AUS_DISFA):
            write_text(os.path.join(out, FOLDER_DISFA, "ActionUnit_Labels", subject, f"{subject}_au{au}.txt"),
                       [f"{t + 1},{v}" for t, v in enumerate(labels[:, k])])
    return {"images": len(jobs), "subjects": len(DISFA_SUBJECTS), "frames_per_subject": cfg["frames"]}


def _bp4d_sequences(cfg):
    return [(s, f"T{k + 1}") for s in BP4D_TRAIN + BP4D_DEVEL for k in range(cfg["tasks"])]


def _bp4d_digits(seed, subject, task):
    """Zero-padded width of a sequence's frame file names (3 or 4 digits, fixed per folder: module docstring)."""
    return int(rng_for(seed, "bp4d", "naming", subject, task).integers(3, 5))


def _bp4d_sequence(seed, cfg, subject, task):
    """(first frame number, render AU dicts, labels with 9 = not coded)."""
    rng = rng_for(seed, "bp4d", "sequence", subject, task)
    aus, labels = _sequence(rng, cfg["frames"], face_model.AUS_BP4D)
    first = int(rng.integers(1, 600))
    coded = rng.random(labels.shape) >= cfg["uncoded_rate"]
    if (subject, task) == (BP4D_TRAIN[0], "T1"):
        coded[-1] = False                                                    # at least one frame is all 9
    return first, aus, np.where(coded, labels, 9)


def plan_bp4d(cfg, seed):
    return [{"key": f"{s}/{task}/{t}", "subject": s, "task": task, "t": t}
            for s, task in _bp4d_sequences(cfg) for t in range(cfg["frames"])]


def make_bp4d(ctx, out, cfg, job):
    first, aus, _ = _bp4d_sequence(ctx.seed, cfg, job["subject"], job["task"])
    image, box = _render_frame(ctx, cfg, "bp4d", job["subject"], job["key"].rsplit("/", 1)[0], job["t"],
                               aus[job["t"]])
    name = f"{first + job['t']:0{_bp4d_digits(ctx.seed, job['subject'], job['task'])}d}.jpg"
    save_image(os.path.join(out, FOLDER_BP4D, "BP4D-training", job["subject"], job["task"], name), image)
    return {"box": box.tolist()}


def finish_bp4d(out, cfg, jobs, records, seed):
    uncoded, firsts = 0, {}
    for subject, task in _bp4d_sequences(cfg):
        first, _, labels = _bp4d_sequence(seed, cfg, subject, task)
        firsts[subject, task] = first
        uncoded += int(np.sum(labels == 9))
        for k, au in enumerate(face_model.AUS_BP4D):
            write_text(os.path.join(out, FOLDER_BP4D, "AU Intensity Codes3.0", f"AU{au:02d}",
                                    f"{subject}_{task}_AU{au:02d}.csv"),
                       [f"{first + t},{v}" for t, v in enumerate(labels[:, k])])
    _write_truth(os.path.join(out, FOLDER_BP4D, TRUTH_BOXES),
                 [f"{j['subject']}/{j['task']}/{firsts[j['subject'], j['task']] + j['t']}" for j in jobs], records)
    return {"images": len(jobs), "train_subjects": len(BP4D_TRAIN), "devel_subjects": len(BP4D_DEVEL),
            "tasks": cfg["tasks"], "uncoded_labels": uncoded}
