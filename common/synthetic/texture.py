"""Per-pixel facial texture of the synthetic benchmark (issue 3): eyes, brows, lips, mouth opening, nostrils.

Details are procedural functions of the interpolated *template coordinates* (tx, ty) of a pixel, so
they stay sharp whatever the mesh resolution and stretch with the mesh when an action unit moves
it (AU5 widens the visible sclera, AU25/26 stretch the dark band between the two mouth rows).
Curves pass through the template positions of the model's own landmark vertices, so the drawn
eye, brow and lip contours agree with the 68 labels. Everything is symmetric (uses |tx|).
"""

import numpy as np

from common.synthetic.head_mesh import MOUTH_INNER_X, smoothstep


def _lid(s, s1, d1, s2, d2):
    """Lid offset d(s) = s (1 - s) (p + q s) through (s1, d1), (s2, d2); zero at both corners."""
    a = np.array([[s1 * (1 - s1), s1 * s1 * (1 - s1)], [s2 * (1 - s2), s2 * s2 * (1 - s2)]])
    p, q = np.linalg.solve(a, [d1, d2])
    return s * (1 - s) * (p + q * s)


def texture_spec(model):
    """Curves of the texture, from the template coordinates of the left-side landmarks (tx > 0)."""
    ids = model.landmark_ids
    pt = np.stack([model.tx[ids], model.ty[ids]], 1)
    return {"pt": pt, "mouth_y": model.mouth_y, "gap": model.mouth_gap}


def _eye(ax, ty, pt):
    """Eye-opening weight, distance to the iris centre and lash-line weight for the (mirrored) left eye."""
    inner, outer = pt[42], pt[45]
    span = outer[0] - inner[0]
    s = (ax - inner[0]) / span
    base = inner[1] + s * (outer[1] - inner[1])
    sc = lambda p: (p[0] - inner[0]) / span  # noqa: E731
    bl = lambda p: inner[1] + sc(p) * (outer[1] - inner[1])  # noqa: E731
    sq = np.clip(s, 0.0, 1.0)
    up = base + _lid(sq, sc(pt[43]), pt[43][1] - bl(pt[43]), sc(pt[44]), pt[44][1] - bl(pt[44]))
    lo = base + _lid(sq, sc(pt[47]), pt[47][1] - bl(pt[47]), sc(pt[46]), pt[46][1] - bl(pt[46]))
    inside_s = (s > 0) & (s < 1)
    opening = np.clip(np.minimum(up - ty, ty - lo) / 0.0005, 0.0, 1.0) * inside_s
    lash = np.clip(1.0 - np.abs(ty - up - 0.0004) / 0.0007, 0.0, 1.0) * smoothstep(s / 0.1 + 0.3) \
        * smoothstep((1.08 - s) / 0.1)
    centre = pt[42:48].mean(0) + np.array([0.0, 0.0004])
    r = np.hypot(ax - centre[0], ty - centre[1])
    return opening, r, lash


def detail_colour(colour, tx, ty, front, identity, spec):
    """Paint eyes, brows, lips, the mouth opening and nostrils onto ``colour`` (P, 3), in place."""
    pt, my, gap = spec["pt"], spec["mouth_y"], spec["gap"]
    ax = np.abs(tx)
    on_face = front > 0.5
    region = on_face & (ax < 0.065) & (ty > my - 0.02) & (ty < 0.035)
    if not region.any():
        return colour
    idx = np.nonzero(region)[0]
    ax, ty, c = ax[idx], ty[idx], colour[idx]
    skin = np.asarray(identity.skin_rgb, np.float32)
    hair = np.asarray(identity.hair_rgb, np.float32)
    eye_rgb = np.asarray(identity.eye_rgb, np.float32)

    # brows: a band around the curve through landmarks 22-26, thicker at the inner end
    bx, by = pt[22:27, 0], pt[22:27, 1]
    yc = np.interp(ax, bx, by) - 0.001
    half = np.interp(ax, bx, [0.0032, 0.003, 0.0025, 0.002, 0.0014])
    brow = np.clip((half - np.abs(ty - yc)) / 0.0008, 0, 1) * smoothstep((ax - bx[0] + 0.002) / 0.003) \
        * smoothstep((bx[-1] + 0.002 - ax) / 0.003)
    c = _mix(c, 0.75 * hair, 0.85 * brow)

    # eyes: sclera, iris with a dark limbal ring, pupil, upper-lid lash line
    opening, r, lash = _eye(ax, ty, pt)
    iris = np.clip((0.0062 - r) / 0.0004, 0, 1)
    pupil = np.clip((0.0024 - r) / 0.0003, 0, 1)
    limbus = np.clip(1 - np.abs(r - 0.0059) / 0.0006, 0, 1)
    eye = np.array([0.93, 0.90, 0.87], np.float32)[None] * np.ones_like(c)
    eye = _mix(eye, eye_rgb * (1.0 - 0.4 * limbus[:, None]), iris)
    eye = _mix(eye, np.array([0.02, 0.02, 0.02], np.float32), pupil)
    c = _mix(c, eye, opening)
    c = _mix(c, 0.35 * hair + 0.02, 0.9 * lash)

    # lips: between the outer contours through 51-54 and 54-57; mouth opening between the rows
    upx, upy = pt[51:55, 0], pt[51:55, 1]
    lox, loy = pt[57:53:-1, 0], pt[57:53:-1, 1]
    x_corner = pt[54, 0]
    top = np.interp(ax, upx, upy) + 0.0006
    bottom = np.interp(ax, lox, loy) - 0.0006
    lips = np.clip(np.minimum(top - ty, ty - bottom) / 0.0008, 0, 1) * np.clip((x_corner + 0.001 - ax) / 0.0015, 0, 1)
    lip_rgb = skin * np.array([0.80, 0.52, 0.52], np.float32) + np.array([0.08, 0.0, 0.01], np.float32)
    c = _mix(c, lip_rgb, 0.8 * lips)
    mouth = np.clip((0.5 * gap - np.abs(ty - my)) / (0.3 * gap), 0, 1) * smoothstep((MOUTH_INNER_X - ax) / 0.003)
    c = _mix(c, np.array([0.22, 0.07, 0.07], np.float32), mouth)

    # nostrils: two dark ellipses under the nose tip
    nos = ((ax - 0.0068) / 0.0032) ** 2 + ((ty + 0.0445) / 0.0018) ** 2
    c = _mix(c, 0.25 * skin, 0.9 * np.clip((1.0 - nos) / 0.3, 0, 1))
    colour[idx] = c
    return colour


def _mix(a, b, w):
    """a + w (b - a) with a per-row weight ``w``; ``b`` broadcasts."""
    return a + w[:, None] * (np.asarray(b, np.float32) - a)
