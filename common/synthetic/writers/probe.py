"""Labelled probe set for pre-training monitors (issue 17; pretrain/probes.py): faces held apart from
the unlabelled pre-training images, each with every label the probes read.

``probe/images/IIII/K.png`` (an identity-folder tree, so ``probe/images`` is also a kNN root) and
``probe/labels.csv``, one row per image with the header
``path,identity,expression,yaw,pitch,roll,au1,...,au26,x0,y0,...,x67,y67``: identity index (identities
drawn in their own namespace, disjoint from the unlabelled set's), AffectNet class 0-7, head pose in
degrees, the 12 DISFA AU intensities (0-5) the face was rendered with, and the 68 iBUG landmarks in
image pixels. Faces are framed as in the unlabelled set (loose crop, pose up to 60 degrees yaw).
"""
import os

import numpy as np

from common.synthetic.face_model import AUS_DISFA
from common.synthetic.writers.files import save_image, write_text
from common.synthetic.writers.sampling import draw_expression, draw_pose, identity, render_inside, rng_for

FOLDER = "probe"
HEADER = ",".join(["path", "identity", "expression", "yaw", "pitch", "roll"] + [f"au{a}" for a in AUS_DISFA]
                  + [f"{c}{i}" for i in range(68) for c in "xy"])


def plan_probe(cfg, seed):
    return [{"key": f"{i}/{k}", "identity": i, "path": os.path.join("images", f"{i:04d}", f"{k}.png")}
            for i in range(cfg["identities"]) for k in range(cfg["per_id"])]


def make_probe(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "probe", job["key"])
    expression, _, aus = draw_expression(rng, neutral_prob=0.25)
    res = render_inside(ctx, identity(ctx, "probe", job["identity"]), aus, draw_pose(rng, max_yaw=60.0, pitch_sd=10.0),
                        rng, scale=float(rng.uniform(0.7, 1.0)))
    save_image(os.path.join(out, FOLDER, job["path"]), res.image)
    return {"expression": expression, "pose": [float(v) for v in res.pose],
            "aus": [float(aus.get(a, 0.0)) for a in AUS_DISFA],
            "landmarks": np.round(res.landmarks.astype(np.float64), 3).ravel().tolist()}


def finish_probe(out, cfg, jobs, records, seed):
    rows = [",".join([job["path"], str(job["identity"]), str(rec["expression"])]
                     + [f"{v:.4f}" for v in rec["pose"] + rec["aus"]] + [f"{v:.3f}" for v in rec["landmarks"]])
            for job, rec in zip(jobs, records)]
    write_text(os.path.join(out, FOLDER, "labels.csv"), [HEADER] + rows)
    return {"images": len(jobs), "identities": cfg["identities"], "per_id": cfg["per_id"]}
