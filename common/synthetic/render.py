"""Renderer of the synthetic face benchmark (issue 3): pose, Lambertian lighting, z-buffer, labels.

Camera: orthographic (weak perspective). Pose angles in degrees with R = Rz(roll) Rx(-pitch) Ry(yaw)
applied to model coordinates (+y up, +z towards the camera): yaw > 0 turns the face towards image
right (the subject's left), pitch > 0 raises the face (looks up), roll > 0 rotates it counter-
clockwise in the image. Image frame: x right, y down, pixel centres at integer coordinates;
z = pixels along the view axis, larger = closer to the camera, 0 at the model origin.
At ``scale=1`` the frontal mean face's jaw width (landmarks 0-16) is ``FACE_FRACTION * size``; the
model origin (a point behind the face centre) projects to the image centre plus ``shift * size``.
"""

from dataclasses import dataclass

import numpy as np

from common.synthetic.raster import eval_planes, rasterize, triangle_planes
from common.synthetic.scene import background as make_background
from common.synthetic.scene import occluder as draw_occluder
from common.synthetic.texture import detail_colour, texture_spec

FACE_FRACTION = 0.45
VISIBILITY_TOL_M = 0.004  # a landmark is visible if no surface is more than 4 mm in front of it


@dataclass
class RenderResult:
    """One rendered face and its labels (image frame: see the module docstring)."""
    image: np.ndarray          # (H, W, 3) uint8
    landmarks: np.ndarray      # (68, 2) float32 iBUG-68, x right, y down
    visible: np.ndarray        # (68,) bool: not self-occluded (z-buffer), not under an occluder, in the image
    landmarks3d: np.ndarray    # (68, 3) float32 x, y, z in pixels (larger z = closer)
    vertices: np.ndarray       # (V, 3) float32 mesh vertices in the same frame
    five_points: np.ndarray    # (5, 2) float32 right eye, left eye, nose tip, right, left mouth corner
    box: np.ndarray            # (4,) float32 x1, y1, x2, y2 tight box of the visible face-region pixels
    pose: np.ndarray           # (3,) float32 yaw, pitch, roll in degrees
    mask: np.ndarray           # (H, W) bool pixels covered by the head (before occluders)
    occluder_mask: np.ndarray  # (H, W) bool pixels covered by the occluder


def rotation(yaw, pitch, roll):
    """3x3 rotation R = Rz(roll) Rx(-pitch) Ry(yaw) (degrees), model frame +y up, +z to the camera."""
    y, p, r = np.deg2rad([yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(model, verts, yaw, pitch, roll, size, scale=1.0, shift=(0.0, 0.0)):
    """Model-space vertices (V, 3) -> image frame (V, 3) float32, and the rotated model coordinates."""
    r = rotation(yaw, pitch, roll)
    cam = np.einsum("vi,ji->vj", verts.astype(np.float64), r)  # no BLAS: one thread, reproducible
    s = scale * FACE_FRACTION * size / model.face_width
    cx = (size - 1) / 2.0 + shift[0] * size
    cy = (size - 1) / 2.0 + shift[1] * size
    img = np.stack([cx + s * cam[:, 0], cy - s * cam[:, 1], s * cam[:, 2]], 1)
    return img.astype(np.float32), cam, s


def vertex_normals(verts, tris, incidence):
    """Area-weighted unit vertex normals (V, 3) of a mesh with outward counter-clockwise winding.

    ``incidence`` is the sparse (V, F) vertex-triangle matrix (``FaceModel.incidence``).
    """
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    e1, e2 = b - a, c - a
    n = np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                  e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], 1)
    out = incidence @ n
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _dot3(v, d):
    """Row-wise dot product of (N, 3) with a 3-vector, without BLAS."""
    return v[:, 0] * d[0] + v[:, 1] * d[1] + v[:, 2] * d[2]


def _lighting(rng):
    """Random light: direction in the frontal hemisphere (camera frame, +y up), ambient, diffuse, specular."""
    az, el = np.deg2rad(rng.uniform(-70, 70)), np.deg2rad(rng.uniform(-25, 60))
    direction = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
    return direction, float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 0.85)), float(rng.uniform(0.0, 0.15)), tint


def render_face(model, identity, aus, *, yaw, pitch, roll, size=256, rng, scale=1.0, shift=(0.0, 0.0),
                background="clutter", occluder=False):
    """Render ``identity`` (``FaceModel.sample_identity``) showing ``aus`` ({AU: intensity 0-5}).

    yaw, pitch, roll: head pose in degrees (conventions in the module docstring); size: square
    image side in pixels; rng: ``numpy.random.Generator`` drawing the light, the background, the
    occluder and the sensor noise (the geometry and labels do not depend on it); scale: face size
    relative to ``FACE_FRACTION``; shift: (dx, dy) offset of the model origin as a fraction of
    ``size``; background: "clutter" or "plain"; occluder: draw one random occluder over the face.
    Deterministic given the state of ``rng``. Returns a ``RenderResult``.
    """
    if int(size) != size or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not np.all(np.isfinite([yaw, pitch, roll, scale])) or scale <= 0:
        raise ValueError(f"bad pose or scale: yaw={yaw}, pitch={pitch}, roll={roll}, scale={scale}")
    size = int(size)
    verts = model.shape(identity, aus)
    img_v, cam, s = project(model, verts, yaw, pitch, roll, size, scale, shift)
    tris = model.triangles
    light, ambient, diffuse, specular, tint = _lighting(rng)
    normals = vertex_normals(cam, tris, model.incidence)
    ndl = _dot3(normals, light)
    half = (light + [0.0, 0.0, 1.0]) / np.linalg.norm(light + [0.0, 0.0, 1.0])
    spec = specular * np.clip(_dot3(normals, half), 0, 1) ** 20 * model.front
    albedo = model.albedo(identity)
    attrs = np.concatenate([albedo, np.clip(ndl, 0, 1)[:, None], spec[:, None], model.tx[:, None],
                            model.ty[:, None], model.front[:, None]], 1).astype(np.float32)

    ras = rasterize(img_v, tris, size, size)
    image = make_background(rng, size, background)
    pix = ras.pixels
    corner = tris[ras.tris]                                                        # (P, 3)
    a = attrs[corner[:, 0]] * ras.bary[:, 0:1]                                     # (P, C)
    a += attrs[corner[:, 1]] * ras.bary[:, 1:2]
    a += attrs[corner[:, 2]] * ras.bary[:, 2:3]
    colour = detail_colour(a[:, :3].copy(), a[:, 5], a[:, 6], a[:, 7], identity, texture_spec(model))
    shaded = colour * (ambient + diffuse * a[:, 3:4]) * tint + a[:, 4:5]
    image[pix // size, pix % size] = shaded  # indexes any memory layout (a reshape may copy)
    mask = np.zeros(size * size, bool)
    mask[pix] = True
    mask = mask.reshape(size, size)

    lm_ids = model.landmark_ids
    lm3 = img_v[lm_ids]
    visible = _visibility(ras, img_v, tris, lm_ids, model.vertex_tris, VISIBILITY_TOL_M * s, size)
    tri_map = ras.tri_map
    face_pix = (tri_map >= 0) & model.face_tris[np.maximum(tri_map, 0)]
    box = _box(face_pix, lm3[:, :2])
    occ = np.zeros((size, size), bool)
    if occluder:
        occ = draw_occluder(rng, image, lm3[:, :2], box)
        xi, yi = np.round(lm3[:, 0]).astype(int), np.round(lm3[:, 1]).astype(int)
        inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        visible &= ~(inside & occ[np.clip(yi, 0, size - 1), np.clip(xi, 0, size - 1)])
    image = _finish(rng, image)
    five = model.five_points(img_v)[:, :2]
    return RenderResult(image, lm3[:, :2].copy(), visible, lm3.copy(), img_v, five.astype(np.float32),
                        box, np.array([yaw, pitch, roll], np.float32), mask, occ)


def _visibility(ras, img_v, tris, lm_ids, vertex_tris, tol, size, window=1):
    """Z-buffer visibility of the landmarks, evaluated at their exact (x, y).

    Candidate surfaces: the triangles that win the z-buffer in the (2 window + 1)^2 pixels around
    the landmark, every triangle sharing a vertex with one of them (this catches sub-pixel
    triangles that win no pixel centre), and the triangles around the landmark's own vertex.
    Among the front-facing candidates that contain the landmark, the nearest must be at most
    ``tol`` px in front of it. A landmark outside the image or on no front-facing triangle
    (turned away, on the outline) is hidden.
    """
    p = img_v[lm_ids].astype(np.float64)
    n_lm = len(lm_ids)
    xi, yi = np.round(p[:, 0]).astype(int), np.round(p[:, 1]).astype(int)
    inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
    off = np.arange(-window, window + 1)
    wy = np.clip(yi[:, None, None] + off[None, :, None], 0, size - 1)
    wx = np.clip(xi[:, None, None] + off[None, None, :], 0, size - 1)
    win = ras.tri_map[wy, wx].reshape(n_lm, -1)                                   # (68, w)
    ring = np.where(win[..., None, None] >= 0, vertex_tris[tris[np.maximum(win, 0)]], -1)
    cand = np.concatenate([win, ring.reshape(n_lm, -1), vertex_tris[lm_ids]], 1)  # (68, C)
    n = cand.shape[1]
    planes, area = triangle_planes(img_v, tris[np.maximum(cand, 0).ravel()], np.float64)
    bary, z = eval_planes(planes, np.repeat(p[:, 0], n), np.repeat(p[:, 1], n))
    ok = (cand >= 0) & (area.reshape(n_lm, n) < -1e-9) & (bary.reshape(n_lm, n, 3) >= -1e-4).all(2)
    front = np.where(ok, z.reshape(n_lm, n), -np.inf).max(1)
    return inside & np.isfinite(front) & (p[:, 2] >= front - tol)


def _box(face_pix, points):
    """x1, y1, x2, y2 of the face-region pixels; the landmarks' box if none is visible."""
    ys, xs = np.nonzero(face_pix)
    if xs.size == 0:
        return np.concatenate([points.min(0), points.max(0)]).astype(np.float32)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def _finish(rng, image):
    """Light [1 2 1]/4 blur against aliasing, grey sensor noise, quantisation to uint8."""
    img = image * 0.5
    img[1:-1] += 0.25 * (image[:-2] + image[2:])
    img[0] += 0.5 * image[0]
    img[-1] += 0.5 * image[-1]
    out = img * 0.5
    out[:, 1:-1] += 0.25 * (img[:, :-2] + img[:, 2:])
    out[:, 0] += 0.5 * img[:, 0]
    out[:, -1] += 0.5 * img[:, -1]
    sigma = np.float32(rng.uniform(0.0, 3.0))
    out *= 255.0
    out += sigma * rng.standard_normal(out.shape[:2] + (1,), dtype=np.float32) + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)
