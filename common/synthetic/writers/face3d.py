"""300W-LP, AFLW2000-3D and Florence-like copies (paper §4.5; shared/research/anchors_landmarks_3d.md §4).

``.mat`` fields as in the real files (§4.1): ``pt2d`` (2×68 float64 in 300W-LP; 2×21 in AFLW2000-3D:
the AFLW-21 points, -1 where missing, i.e. occluded or an ear, which the model lacks), ``pt3d_68``
(3×68 float32, AFLW2000-3D only), ``Pose_Para`` (1×7 float32: **pitch, yaw, roll in radians**, tx, ty,
tz, scale), ``Shape_Para``, ``Exp_Para`` (column vectors), ``Tex_Para``, ``Illum_Para`` (1×10),
``Color_Para`` (1×7), ``roi`` (1×4 int16, not a face box). Image coordinates are 0-based pixel centres,
y down (face3d's ``y = H - y - 1`` convention, §4.1); z grows towards the camera (pixels, 0 at the
model origin).

No BFM is available (DESIGN.md "Data"), so: ``Shape_Para`` holds the synthetic identity coefficients
and ``Exp_Para`` the AU intensities (0-5) in sorted ``FaceModel.au_index`` key order (not 199 / 29 BFM
coefficients); each ``.mat`` stores the posed mesh directly as ``vertices`` (3×V float32, same frame
as ``pt3d_68``); ``face_model/mesh_topology.mat`` holds what the 3D task reads in place of the BFM
files: ``tri`` (F×3, 1-based), ``kpt_ind`` (1×68, 1-based, like the BFM's), ``sym_perm`` (1×V,
1-based mirror permutation, the analogue of ``BFM_info.symlist``), ``mean_shape`` (3×V, model units)
and ``au_keys`` (the order of ``Exp_Para``). ``Pose_Para`` angles are the rendered pose in the
renderer's convention (``render.rotation``: R = Rz(roll) Rx(-pitch) Ry(yaw)); tx, ty, tz and scale are
the least-squares similarity from the model-space mesh to the y-flipped image mesh.

300W-LP (§4.1): ``{AFW,HELEN,LFPW,IBUG}/<SET>_<source>_<view>.jpg`` + ``.mat``, views of one source
turning towards profile, and mirrored copies in ``<SET>_Flip/`` (landmarks re-ordered by the iBUG flip
permutation, vertices by ``sym_perm``). AFLW2000-3D: ``imageNNNNN.jpg`` + ``.mat``, |yaw| spread over
the three protocol bins [0, 30], (30, 60], (60, 90], and ``AFLW2000-3D-new.pose.npy`` in the format of
cleardusk/3DDFA ``test.configs/`` (float32 (N,), |yaw| in degrees, sorted image-name order): the rendered
|yaw| except every ``POSE_FILE_EVERY``-th image, whose yaw sits in the middle of the next bin (3DDFA's
AFLW-label split and Pose_Para disagree on 242 of the 2,000 real images), so the two sources give
different bin counts. Florence-like (§4.5, no public protocol code):
``subject_NN/Model/frontal1/obj/subject_NN.obj`` (neutral mesh, millimetres, 1-based faces) and
``renders/subject_NN/subject_NN_yaw<Y>_pitch<P>.jpg`` + ``.mat`` on a yaw × pitch grid.
"""
import io
import os

import numpy as np
from scipy.spatial import cKDTree

from common.landmark_schemes import flip_permutation
from common.synthetic.writers import canvas, markups
from common.synthetic.writers.files import save_image, save_mat, write_bytes
from common.synthetic.writers.sampling import (draw_expression, draw_pose, identity, render_in_canvas,
                                               context, rng_for, shared_model)

FOLDER_LP, FOLDER_AFLW2000, FOLDER_FLORENCE, FOLDER_MODEL = "300W_LP", "AFLW2000", "Florence", "face_model"
_AFLW21_EARS = (12, 16)                 # AFLW-21 = AFLW-19 plus two ear points [inferred from the AFLW markup]
POSE_FILE, POSE_FILE_EVERY = "AFLW2000-3D-new.pose.npy", 5   # 3DDFA test.configs name; which images move bin
_BIN_MIDDLES = (15.0, 45.0, 75.0)


def mirror_permutation(model):
    """Vertex permutation of the mirror x -> -x (the model's own, else nearest mirrored vertex)."""
    perm = getattr(model, "mirror", None)
    if perm is not None:
        return np.asarray(perm, dtype=np.int64)
    mirrored = model.vertices * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    return cKDTree(model.vertices).query(mirrored)[1].astype(np.int64)


def write_topology(out, model):
    """``face_model/mesh_topology.mat`` (same bytes for every 3D writer that calls it)."""
    save_mat(os.path.join(out, FOLDER_MODEL, "mesh_topology.mat"),
             {"tri": np.asarray(model.triangles, np.int32) + 1,
              "kpt_ind": np.asarray(model.landmark_ids, np.int32)[None] + 1,
              "sym_perm": mirror_permutation(model).astype(np.int32)[None] + 1,
              "mean_shape": np.asarray(model.vertices, np.float32).T,
              "au_keys": np.array([sorted(model.au_index)], np.int32)})


def _similarity(src, dst):
    """Least-squares (scale, R, t) with dst ≈ scale * R @ src + t (Umeyama), for (N, 3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / a.var(0).sum()
    return scale, rot, mu_d - scale * rot @ mu_s


def _mat(model, ident, aus, pose, vertices, height, extra, model_vertices=None):
    """The fields shared by the 3D sets' ``.mat`` files (``model_vertices``: default the unposed face)."""
    if model_vertices is None:
        model_vertices = model.shape(ident, aus)
    flipped = vertices.astype(np.float64) * [1, -1, 1] + [0, height - 1, 0]  # image y down -> y up
    scale, _, t = _similarity(model_vertices.astype(np.float64), flipped)
    yaw, pitch, roll = np.radians(pose)
    exp = np.array([float(aus.get(au, 0.0)) for au in sorted(model.au_index)], np.float32)
    colours = np.concatenate([np.ravel(getattr(ident, k)) for k in ("skin_rgb", "eye_rgb", "hair_rgb")])
    extent = np.ptp(vertices[:, :2], 0)
    lo = vertices[:, :2].min(0) - 0.6 * extent
    return {**extra, "Pose_Para": np.array([[pitch, yaw, roll, *t, scale]], np.float32),
            "Shape_Para": np.asarray(ident.shape, np.float32)[:, None], "Exp_Para": exp[:, None],
            "Tex_Para": colours.astype(np.float32)[:, None], "Illum_Para": np.zeros((1, 10), np.float32),
            "Color_Para": np.array([[1, 1, 1, 0, 0, 0, 1]], np.float32),
            "roi": np.round(np.concatenate([lo, lo + 2.2 * extent]))[None].astype(np.int16),
            "vertices": vertices.T.astype(np.float32)}


def _render_3d(ctx, rng, ident, aus, pose, shape, **kwargs):
    """Render into a ``shape`` photo: photo, vertices (V, 3), landmarks3d (68, 3), landmarks (68, 2), visible."""
    photo, res, offset = render_in_canvas(ctx, ident, aus, pose, rng, shape, **kwargs)
    shift = np.array([offset[0], offset[1], 0.0])
    return (photo, res.vertices.astype(np.float64) + shift, res.landmarks3d.astype(np.float64) + shift,
            res.landmarks.astype(np.float64) + offset, res.visible)


_LP_SETS = ("AFW", "HELEN", "LFPW", "IBUG")


def plan_300w_lp(cfg, seed):
    rng = rng_for(seed, "300w_lp", "names")
    jobs = []
    for name in _LP_SETS:
        for s in range(cfg["sources"]):
            source = {"AFW": f"{int(rng.integers(10**5, 10**7))}_1",
                      "HELEN": f"{int(rng.integers(10**7, 4 * 10**9))}_1",
                      "LFPW": f"image_train_{s + 1:04d}", "IBUG": f"image_{3 + 7 * s:03d}_1"}[name]
            jobs += [{"key": f"{name}/{source}/{v}", "set": name, "source": f"{name}_{source}", "view": v}
                     for v in range(cfg["views"])]
    return jobs


def make_300w_lp(ctx, out, cfg, job):
    src_rng = rng_for(ctx.seed, "300w_lp", "source", job["source"])          # one face, several views
    ident = identity(ctx, "300w_lp", job["source"])
    _, _, aus = draw_expression(src_rng, neutral_prob=0.3)
    yaw0, pitch, roll = draw_pose(src_rng, max_yaw=25.0)
    yaw = float(np.clip(yaw0 + np.sign(yaw0) * 20.0 * job["view"], -88.0, 88.0))
    rng = rng_for(ctx.seed, "300w_lp", job["key"])
    photo, verts, _, pt2d, _ = _render_3d(ctx, rng, ident, aus, (yaw, pitch, roll), (cfg["canvas"],) * 2)
    model_verts = ctx.model.shape(ident, aus)
    sym = mirror_permutation(ctx.model)
    h, w = photo.shape[:2]
    views = ((job["set"], photo, verts, pt2d, model_verts, (yaw, pitch, roll)),             # the flip mirrors
             (job["set"] + "_Flip", photo[:, ::-1], canvas.hflip_points(verts, w)[sym],      # pixels, re-orders
              canvas.hflip_points(pt2d, w)[flip_permutation(68)],                          # landmarks / vertices
              (model_verts * [-1, 1, 1])[sym], (-yaw, pitch, -roll)))
    for folder, img, v, p2, mv, pose in views:
        path = os.path.join(out, FOLDER_LP, folder, f"{job['source']}_{job['view']}")
        save_image(path + ".jpg", np.ascontiguousarray(img))
        save_mat(path + ".mat", _mat(ctx.model, ident, aus, pose, v, h, {"pt2d": p2.T.astype(np.float64)}, mv))
    return {}


def finish_300w_lp(out, cfg, jobs, records, seed):
    write_topology(out, shared_model())
    return {"images": 2 * len(jobs), "sources": len(_LP_SETS) * cfg["sources"], "views": cfg["views"]}


def plan_aflw2000(cfg, seed):
    ids = np.cumsum(rng_for(seed, "aflw2000", "names").integers(1, 60, cfg["images"])) + 1
    return [{"key": str(i), "name": f"image{ids[i]:05d}", "bin": i % 3} for i in range(cfg["images"])]


def make_aflw2000(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "aflw2000", job["key"])
    ident = identity(ctx, "aflw2000", job["key"])
    _, _, aus = draw_expression(rng, neutral_prob=0.4)
    lo, hi = ((0.0, 30.0), (31.0, 60.0), (61.0, 85.0))[job["bin"]]
    pose = draw_pose(rng, min_yaw=lo, max_yaw=hi, pitch_sd=8.0)
    photo, verts, lm3d, lm2d, visible = _render_3d(ctx, rng, ident, aus, pose, (cfg["canvas"],) * 2,
                                                   scale=float(rng.uniform(0.8, 1.0)))
    pt19 = markups.convert(lm2d, 19)
    pt19[~markups.convert_visibility(visible, 19)] = -1.0
    pt21 = np.insert(pt19, [_AFLW21_EARS[0], _AFLW21_EARS[1] - 1], -1.0, axis=0)
    extra = {"pt2d": pt21.T.astype(np.float64), "pt3d_68": lm3d.T.astype(np.float32)}
    path = os.path.join(out, FOLDER_AFLW2000, job["name"])
    save_image(path + ".jpg", photo)
    save_mat(path + ".mat", _mat(ctx.model, ident, aus, pose, verts, photo.shape[0], extra))
    return {"yaw": pose[0]}


def pose_file_yaws(jobs, records):
    """|yaw| (degrees) of the 3DDFA-style pose file, in job (= sorted image-name) order (module docstring)."""
    yaws = [abs(r["yaw"]) for r in records]
    for i, job in enumerate(jobs):
        if i % POSE_FILE_EVERY == POSE_FILE_EVERY - 1:
            yaws[i] = _BIN_MIDDLES[(job["bin"] + 1) % 3]
    return np.asarray(yaws, dtype=np.float32)


def finish_aflw2000(out, cfg, jobs, records, seed):
    write_topology(out, shared_model())
    buf = io.BytesIO()
    np.save(buf, pose_file_yaws(jobs, records), allow_pickle=False)
    write_bytes(os.path.join(out, FOLDER_AFLW2000, POSE_FILE), buf.getvalue())
    return {"images": len(jobs), "yaw_bins": [sum(j["bin"] == b for j in jobs) for b in range(3)]}


def plan_florence(cfg, seed):
    return [{"key": f"{s}/{yaw}/{pitch}", "subject": f"subject_{s + 1:02d}", "yaw": yaw, "pitch": pitch}
            for s in range(cfg["subjects"]) for yaw in cfg["yaws"] for pitch in cfg["pitches"]]


def make_florence(ctx, out, cfg, job):
    rng = rng_for(ctx.seed, "florence", job["key"])
    ident = identity(ctx, "florence", job["subject"])
    pose = (float(job["yaw"]), float(job["pitch"]), 0.0)
    photo, verts, lm3d, _, _ = _render_3d(ctx, rng, ident, {}, pose, (ctx.size, ctx.size), background="plain")
    path = os.path.join(out, FOLDER_FLORENCE, "renders", job["subject"],
                        f"{job['subject']}_yaw{job['yaw']:+d}_pitch{job['pitch']:+d}")
    save_image(path + ".jpg", photo)
    save_mat(path + ".mat", _mat(ctx.model, ident, {}, pose, verts, photo.shape[0],
                                 {"pt3d_68": lm3d.T.astype(np.float32)}))
    return {}


def finish_florence(out, cfg, jobs, records, seed):
    model = shared_model()
    write_topology(out, model)
    faces = "".join(f"f {a} {b} {c}\n" for a, b, c in np.asarray(model.triangles) + 1)
    for s in range(cfg["subjects"]):
        subject = f"subject_{s + 1:02d}"
        ident = identity(context(seed, 0), "florence", subject)
        mesh = model.shape(ident, {}) * 1000.0                               # model metres -> millimetres
        text = "# neutral mesh, millimetres, model axes (+y up, +z towards the camera)\n"
        text += "".join(f"v {x:.4f} {y:.4f} {z:.4f}\n" for x, y, z in mesh) + faces
        write_bytes(os.path.join(out, FOLDER_FLORENCE, subject, "Model", "frontal1", "obj", f"{subject}.obj"),
                    text.encode("ascii"))
    return {"images": len(jobs), "subjects": cfg["subjects"]}
