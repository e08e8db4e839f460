"""Parametric head mesh of the synthetic face benchmark (issue 3): symmetric grid, facial relief, iBUG-68 template.

The head is a stack of horizontal elliptical cross-sections (neck base to crown) sampled on a
latitude/longitude grid that is denser on the face. Facial relief (nose, sockets, lips, chin,
ears) is a sum of smooth bumps written in *template coordinates* ``(tx, ty)``: the frontal x, y
of a vertex on the plain cross-section surface, in metres, eye line at ``ty = 0``, ``tx < 0`` on
the subject's right (image left for a frontal face, as in iBUG). The grid and every bump are
mirror-symmetric, so ``x -> -x`` maps the mesh onto itself with the vertex permutation ``mirror``.
"""

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from common.landmark_schemes import flip_permutation

N_COLS = 104  # longitudes (even: column N_COLS // 2 is the facial midline, column 0 the back)
N_ROWS = 94  # latitudes between the neck base and the crown (plus one pole at each end)
MOUTH_Y = -0.069  # target height of the lip line; snapped to the middle of two grid rows
MOUTH_INNER_X = 0.022  # half-width of the mouth opening (inner lip corners)

# Cross-sections from the neck base to the crown: y, half-width X, front z, back z (metres).
_PROFILE = np.array([
    [-0.240, 0.051, 0.036, -0.054], [-0.170, 0.049, 0.033, -0.050], [-0.138, 0.050, 0.037, -0.050],
    [-0.127, 0.052, 0.053, -0.053], [-0.117, 0.055, 0.070, -0.057], [-0.100, 0.059, 0.082, -0.063],
    [-0.070, 0.065, 0.087, -0.073], [-0.040, 0.069, 0.088, -0.086], [0.000, 0.074, 0.083, -0.100],
    [0.030, 0.077, 0.085, -0.106], [0.070, 0.074, 0.077, -0.104], [0.100, 0.058, 0.055, -0.086],
    [0.118, 0.030, 0.024, -0.056]])
FRONT_EXPONENT = 0.8  # front half of each cross-section: z = zc + zr cos(u) ** 0.8 (a flatter face)
_CROWN_Y = 0.125

# Nose ridge height and width along y (the nose is the largest bump of the relief).
_NOSE_H = PchipInterpolator(
    [-0.052, -0.048, -0.045, -0.041, -0.037, -0.033, -0.024, -0.012, 0.0, 0.006, 0.016],
    [0.0, 0.003, 0.010, 0.019, 0.0225, 0.021, 0.015, 0.0105, 0.0065, 0.004, 0.0], extrapolate=False)
_NOSE_W = ([-0.046, -0.036, -0.02, 0.01], [0.011, 0.0085, 0.0065, 0.007])


def smoothstep(x):
    """Cubic Hermite step: 0 for x <= 0, 1 for x >= 1."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def gauss(x, y, cx, cy, sx, sy):
    """Axis-aligned 2-D Gaussian bump of height 1 centred at (cx, cy)."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _template68(mouth_y):
    """Target (tx, ty) of the 68 iBUG points on the frontal template; inner lips are placed by row."""
    # jaw line from the right ear (0) down to the chin (8): at about 70 degrees of longitude on the
    # sides, i.e. near the face outline of a frontal view, and mirrored for 9-16
    half = np.array([[0.069, -0.010], [0.068, -0.028], [0.066, -0.046], [0.062, -0.064], [0.056, -0.082],
                     [0.047, -0.097], [0.035, -0.108], [0.018, -0.115], [0.0, -0.117]])
    jaw = np.concatenate([half * [-1, 1], half[-2::-1]], 0)
    brow_r = [(-0.058, 0.013), (-0.049, 0.020), (-0.039, 0.023), (-0.029, 0.022), (-0.017, 0.019)]
    brow_l = [(-x, y) for x, y in brow_r[::-1]]
    nose = [(0, 0.002), (0, -0.011), (0, -0.023), (0, -0.036),
            (-0.013, -0.044), (-0.0065, -0.046), (0, -0.047), (0.0065, -0.046), (0.013, -0.044)]
    eye_r = [(-0.047, 0.001), (-0.038, 0.0052), (-0.027, 0.0052), (-0.0175, -0.0005), (-0.027, -0.0045),
             (-0.038, -0.0045)]
    eye_l = [(-x, y) for x, y in (eye_r[3], eye_r[2], eye_r[1], eye_r[0], eye_r[5], eye_r[4])]
    m = [(-0.025, 0), (-0.016, 0.0065), (-0.007, 0.0095), (0, 0.008), (0.007, 0.0095), (0.016, 0.0065),
         (0.025, 0), (0.016, -0.0075), (0.008, -0.0105), (0, -0.011), (-0.008, -0.0105), (-0.016, -0.0075),
         (-0.0205, 0), (-0.010, 0), (0, 0), (0.010, 0), (0.0205, 0), (0.010, 0), (0, 0), (-0.010, 0)]
    m = [(x, y + mouth_y) for x, y in m]
    return np.concatenate([jaw, np.array(brow_r + brow_l + nose + eye_r + eye_l + m, float)], 0)


def _grid_rows():
    """Row parameters along the profile: denser at the eyes, the nose tip and the mouth."""
    seg = np.hypot(np.diff(_PROFILE[:, 0]), np.diff(_PROFILE[:, 2]))
    knots = np.concatenate([[0.0], np.cumsum(seg)])
    prof = PchipInterpolator(knots, _PROFILE)
    t = np.linspace(0.0, knots[-1], 4001)
    p = prof(t)
    speed = np.hypot(np.gradient(p[:, 0], t), np.gradient(p[:, 2], t))
    y = p[:, 0]
    weight = 0.35 + 1.0 * ((y > -0.13) & (y < 0.075)) + 0.9 * ((y > -0.014) & (y < 0.016)) \
        + 0.9 * ((y > MOUTH_Y - 0.018) & (y < MOUTH_Y + 0.015)) + 0.5 * ((y > -0.05) & (y < -0.03))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (speed * weight)[1:] * np.diff(t)
                                           + 0.5 * (speed * weight)[:-1] * np.diff(t))])
    rows_t = np.interp(np.linspace(0.0, 1.0, N_ROWS), cdf / cdf[-1], t)
    return prof(rows_t)


def _grid_cols():
    """Longitudes, symmetric about 0 (front) with column 0 at -pi (back); denser on the face."""
    u = np.linspace(0.0, np.pi, 2001)
    w = 1.0 + 5.0 * smoothstep((1.45 - u) / 0.5) + 2.0 * np.exp(-((u - 1.75) / 0.25) ** 2)  # face, ears
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(u))])
    half = np.interp(np.arange(N_COLS // 2 + 1) / (N_COLS // 2), cdf / cdf[-1], u)  # 0 .. pi
    return np.concatenate([-half[::-1], half[1:-1]])  # -pi .. 0 .. (pi - step)


def _triangles():
    """Quads split along mirror-symmetric diagonals, plus fans to the two poles; outward winding."""
    r, c = np.meshgrid(np.arange(N_ROWS - 1), np.arange(N_COLS), indexing="ij")
    a = r * N_COLS + c
    b = r * N_COLS + (c + 1) % N_COLS
    d, e = a + N_COLS, b + N_COLS  # a, b on the lower row; d above a, e above b
    left = (c < N_COLS // 2)[..., None]
    quads = np.where(left, np.stack([a, b, e, a, e, d], -1), np.stack([a, b, d, b, e, d], -1))
    tris = quads.reshape(-1, 3)
    bottom, top = N_ROWS * N_COLS, N_ROWS * N_COLS + 1
    cols = np.arange(N_COLS)
    nxt = (cols + 1) % N_COLS
    fan_b = np.stack([np.full(N_COLS, bottom), nxt, cols], 1)
    fan_t = np.stack([np.full(N_COLS, top), (N_ROWS - 1) * N_COLS + cols, (N_ROWS - 1) * N_COLS + nxt], 1)
    return np.concatenate([tris, fan_b, fan_t], 0).astype(np.int64)


@dataclass
class HeadMesh:
    """Neutral head geometry and the per-vertex maps the face model and renderer need."""
    vertices: np.ndarray      # (V, 3) neutral relief, metres, eye line y = 0
    triangles: np.ndarray     # (F, 3) int64, counter-clockwise seen from outside
    mirror: np.ndarray        # (V,) int64, vertex index of the x-mirrored vertex
    tx: np.ndarray            # (V,) template x (frontal x of the plain surface)
    ty: np.ndarray            # (V,) template y
    lon: np.ndarray           # (V,) longitude, 0 = facial midline
    front: np.ndarray         # (V,) 1 on the face, 0 on the back of the head
    landmark_ids: np.ndarray  # (68,) int64, iBUG order
    mouth_y: float            # lip line, halfway between the two rows of the mouth opening
    mouth_gap: float          # row spacing across the lip line
    mouth_rows: np.ndarray    # (V,) bool, the two rows whose stretch opens the mouth


def build_head():
    """Build the symmetric neutral head mesh (deterministic, no randomness)."""
    rows = _grid_rows()  # (N_ROWS, 4): y, X, zf, zb
    lon = _grid_cols()
    k = int(np.searchsorted(rows[:, 0], MOUTH_Y)) - 1  # rows k, k+1 straddle the lip line
    mouth_y = 0.5 * (rows[k, 0] + rows[k + 1, 0])
    y = np.repeat(rows[:, 0], N_COLS)
    half_w = np.repeat(rows[:, 1], N_COLS)
    zc = np.repeat(0.5 * (rows[:, 2] + rows[:, 3]), N_COLS)
    zr = np.repeat(0.5 * (rows[:, 2] - rows[:, 3]), N_COLS)
    u = np.tile(lon, N_ROWS)
    x = half_w * np.sin(u)
    cos_u = np.cos(u)
    z = zc + zr * np.sign(cos_u) * np.abs(cos_u) ** np.where(cos_u > 0, FRONT_EXPONENT, 1.0)
    bottom = [0.0, rows[0, 0], 0.5 * (rows[0, 2] + rows[0, 3])]
    top = [0.0, _CROWN_Y, 0.5 * (rows[-1, 2] + rows[-1, 3])]
    x, y, z = (np.concatenate([v, [bottom[i], top[i]]]) for i, v in enumerate((x, y, z)))
    u = np.concatenate([u, [np.pi, np.pi]])
    tx, ty = x.copy(), y.copy()
    front = smoothstep((1.55 - np.abs(u)) / 0.45)
    row_id = np.concatenate([np.repeat(np.arange(N_ROWS), N_COLS), [-1, -2]])
    mouth_rows = ((row_id == k) | (row_id == k + 1)) & (np.abs(tx) < MOUTH_INNER_X) & (np.abs(u) < 1.0)

    z = z + front * _relief(tx, ty, mouth_y) - 0.0015 * mouth_rows
    ear = 0.012 * np.exp(-(((np.abs(u) - 1.72) / 0.12) ** 4 + ((ty + 0.016) / 0.027) ** 4))  # flat-topped flap
    x, z = x + ear * np.sin(u), z + ear * np.cos(u)
    verts = np.stack([x, y, z], 1)

    mirror_cols = (N_COLS - np.arange(N_COLS)) % N_COLS
    mirror = np.concatenate([(np.arange(N_ROWS)[:, None] * N_COLS + mirror_cols[None]).ravel(),
                             [N_ROWS * N_COLS, N_ROWS * N_COLS + 1]])
    mesh = HeadMesh(verts, _triangles(), mirror.astype(np.int64), tx, ty, u, front,
                    np.zeros(68, np.int64), float(mouth_y), float(rows[k + 1, 0] - rows[k, 0]), mouth_rows)
    mesh.landmark_ids = _place_landmarks(mesh, row_id, k)
    return mesh


def _relief(x, y, mouth_y):
    """Facial relief along +z (metres) as a function of template coordinates; symmetric in x."""
    ax = np.abs(x)
    nose_h = np.nan_to_num(_NOSE_H(y), nan=0.0)
    nose = nose_h * np.exp(-0.5 * (x / np.interp(y, *_NOSE_W)) ** 2)
    return (nose + 0.007 * gauss(ax, y, 0.012, -0.041, 0.005, 0.005)   # nose and alae
            - 0.008 * gauss(ax, y, 0.032, 0.003, 0.014, 0.010)         # eye sockets
            + 0.005 * gauss(ax, y, 0.032, 0.0, 0.009, 0.006)           # eyeballs
            + 0.004 * gauss(ax, y, 0.030, 0.017, 0.022, 0.006)         # brow ridges
            + 0.005 * gauss(ax, y, 0.046, -0.020, 0.014, 0.014)        # cheekbones
            + 0.004 * gauss(ax, y, 0.0, mouth_y + 0.005, 0.018, 0.005)  # upper lip
            + 0.005 * gauss(ax, y, 0.0, mouth_y - 0.006, 0.016, 0.005)  # lower lip
            - 0.003 * gauss(ax, y, 0.0, mouth_y - 0.018, 0.015, 0.004)  # mentolabial sulcus
            + 0.006 * gauss(ax, y, 0.0, -0.100, 0.016, 0.010))          # chin


def _place_landmarks(mesh, row_id, k):
    """Nearest vertices to the template points; left side by mirroring, midline on the centre column."""
    target = _template68(mesh.mouth_y)
    ids = np.zeros(68, np.int64)
    perm = flip_permutation(68)
    candidates = np.abs(mesh.lon) < 1.45
    centre_col = np.abs(mesh.lon) < 1e-9
    upper_inner, lower_inner = set(range(60, 65)), set(range(65, 68))
    for i in range(68):  # 68 template points, once at build time
        if target[i, 0] > 1e-9:
            continue
        ok = candidates & (centre_col if abs(target[i, 0]) < 1e-9 else mesh.tx < 0)
        if i in upper_inner:
            ok = ok & (row_id == k + 1)
        elif i in lower_inner:
            ok = ok & (row_id == k)
        d = np.where(ok, (mesh.tx - target[i, 0]) ** 2 + (mesh.ty - target[i, 1]) ** 2, np.inf)
        ids[i] = int(np.argmin(d))
    for i in range(68):
        if target[i, 0] > 1e-9:
            ids[i] = mesh.mirror[ids[perm[i]]]
    return ids
