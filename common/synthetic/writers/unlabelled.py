"""Unlabelled pre-training folder (paper §3, the face images SwAV / MoCo pre-train on).

``unlabelled/images/NNN/NNNNNNN.jpg`` (1000 files per sub-folder): faces of many identities, poses,
expressions and occluders on cluttered backgrounds, loosely cropped. With ``corrupt: true`` (the
tiny preset) five files stand in for what web crawls contain (DESIGN.md "Bad input"): a zero-byte
file, a truncated JPEG, a text file with a ``.jpg`` name, a grayscale JPEG and a CMYK JPEG. The
first three must be skipped and counted by the loaders, the last two converted to RGB.
"""
import os

from PIL import Image

from common.synthetic.writers.files import encode_image, write_bytes
from common.synthetic.writers.sampling import draw_expression, draw_pose, identity, render_inside, rng_for

FOLDER = "unlabelled"
CORRUPT_KINDS = ("zero_byte", "truncated", "not_an_image", "grayscale", "cmyk")


def _path(i):
    return os.path.join("images", f"{i // 1000:03d}", f"{i:07d}.jpg")


def plan_unlabelled(cfg, seed):
    n = cfg["images"]
    kinds = {}
    if cfg["corrupt"]:
        slots = rng_for(seed, "unlabelled", "corrupt").choice(n, len(CORRUPT_KINDS), replace=False)
        kinds = dict(zip(slots.tolist(), CORRUPT_KINDS))
    return [{"key": str(i), "path": _path(i), "kind": kinds.get(i, "face")} for i in range(n)]


def make_unlabelled(ctx, out, cfg, job):
    path = os.path.join(out, FOLDER, job["path"])
    if job["kind"] in ("zero_byte", "not_an_image"):
        write_bytes(path, b"" if job["kind"] == "zero_byte" else b"<html><body>404 Not Found</body></html>\n")
        return {"kind": job["kind"]}
    rng = rng_for(ctx.seed, "unlabelled", job["key"])
    _, _, aus = draw_expression(rng, neutral_prob=0.3)
    res = render_inside(ctx, identity(ctx, "unlabelled", job["key"]), aus, draw_pose(rng, max_yaw=75.0, pitch_sd=12.0),
                        rng, scale=float(rng.uniform(0.6, 1.0)), occluder=bool(rng.random() < 0.15))
    image = Image.fromarray(res.image)
    if job["kind"] == "grayscale":
        image = image.convert("L")
    elif job["kind"] == "cmyk":
        image = image.convert("CMYK")
    data = encode_image(image, ".jpg")
    if job["kind"] == "truncated":
        data = data[:len(data) // 2]
    write_bytes(path, data)
    return {"kind": job["kind"]}


def finish_unlabelled(out, cfg, jobs, records, seed):
    corrupt = {j["kind"]: j["path"] for j in jobs if j["kind"] != "face"}
    return {"images": len(jobs), "corrupt": corrupt}
