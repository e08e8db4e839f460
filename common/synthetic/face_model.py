"""Parametric 3D face model of the synthetic benchmark (issue 3): identity modes, FACS action-unit modes, colours.

``FaceModel(seed)`` is built in code from the symmetric head mesh of ``head_mesh``. A face is

    shape = neutral + sum_k identity.shape[k] * ID_MODE[k] + sum_au (intensity_au / 5) * AU_MODE[au]

in metres, face centred at the origin, +y up, +z towards the camera. Identity modes are smooth and
mirror-symmetric, so a face and its x-mirror differ only by the vertex permutation ``mirror``.
Action-unit modes follow the FACS descriptions of the appearance changes (Ekman, Friesen & Hager,
*Facial Action Coding System*, 2002): e.g. AU12 pulls the lip corners up and out, AU26 rotates the
jaw open about the ear axis. AU intensities are the FACS A-E scale mapped to 1-5 (0 = absent), as
in DISFA and BP4D. Unilateral AUs (contempt: R12 + R14) use the keys ``right(12)`` = 112 etc.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from common.synthetic.head_mesh import MOUTH_INNER_X, build_head, gauss, smoothstep

AUS_DISFA = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
AUS_BP4D = (6, 10, 12, 14, 17)
AUS = tuple(sorted(set(AUS_DISFA) | set(AUS_BP4D) | {7, 16, 23}))  # + 7, 16, 23 for the EMFACS prototypes
RIGHT = 100  # key offset of a unilateral AU on the subject's right side: right(12) == 112
N_IDENTITY = 24
PIVOT_Z = 0.045  # the model origin (rotation centre) lies this far in front of the head axis, behind the face

_SKIN = np.array([[0.97, 0.83, 0.73], [0.90, 0.72, 0.58], [0.78, 0.57, 0.42], [0.62, 0.42, 0.29],
                  [0.45, 0.29, 0.19], [0.30, 0.19, 0.12]])
_EYES = np.array([[0.30, 0.18, 0.08], [0.18, 0.10, 0.05], [0.30, 0.45, 0.62], [0.35, 0.45, 0.28],
                  [0.45, 0.33, 0.15], [0.42, 0.50, 0.55]])
_HAIR = np.array([[0.06, 0.05, 0.05], [0.20, 0.13, 0.08], [0.40, 0.27, 0.15], [0.72, 0.58, 0.36],
                  [0.50, 0.22, 0.10], [0.55, 0.55, 0.55]])


def _hairline(lon):
    """Mean hairline height (template y) at |longitude| ``lon``: forehead, around the ears, nape."""
    return np.interp(lon, [0.0, 0.9, 1.35, 1.68, 2.0, np.pi], [0.062, 0.055, 0.035, 0.015, -0.02, -0.075])


def right(au):
    """Key of the right-side-only (unilateral) version of ``au``."""
    return RIGHT + int(au)


@dataclass
class Identity:
    """One synthetic person: shape coefficients (N(0,1) units) and colours (RGB in [0, 1])."""
    shape: np.ndarray
    skin_rgb: np.ndarray
    eye_rgb: np.ndarray
    hair_rgb: np.ndarray
    id_seed: int


class FaceModel:
    """Head mesh with identity and action-unit modes; deterministic for a given ``seed``.

    Attributes: ``vertices`` (V, 3) float32 neutral mean shape; ``triangles`` (F, 3) int64 (counter-
    clockwise seen from outside); ``landmark_ids`` (68,) iBUG-68 vertex indices; ``mirror`` (V,)
    x-mirror vertex permutation; ``tx, ty`` template coordinates and ``front`` weight (for texturing);
    ``face_region`` (V,) bool and ``face_tris`` (F,) bool: inside the jaw line, up to the forehead
    (what the face box covers);
    ``incidence`` sparse (V, F) vertex-triangle matrix; ``vertex_tris`` (V, 8) triangles around each
    vertex (-1 padded); ``id_modes`` (K, V, 3) and ``au_modes`` (A, V, 3) displacement fields with
    ``au_index`` {AU key: row of ``au_modes``}; ``face_width`` jaw width (landmarks 0-16), metres.
    """

    def __init__(self, seed=0):
        mesh = build_head()
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
        self.seed = int(seed)
        self.triangles = mesh.triangles
        self.mirror = mesh.mirror
        self.landmark_ids = mesh.landmark_ids
        self.tx, self.ty, self.lon, self.front = mesh.tx, mesh.ty, mesh.lon, mesh.front
        self.mouth_y, self.mouth_gap, self.mouth_rows = mesh.mouth_y, mesh.mouth_gap, mesh.mouth_rows
        base = mesh.vertices
        self.id_modes = _identity_modes(base, mesh, rng).astype(np.float32)         # (K, V, 3)
        self._id_flat = self.id_modes.reshape(N_IDENTITY, -1)
        keys = list(AUS) + [right(12), right(14)]
        fields = _au_modes(base, mesh)
        self.au_index = {k: i for i, k in enumerate(keys)}
        self.au_modes = np.stack([fields[k] for k in keys]).astype(np.float32)       # (A, V, 3)
        lm = base[self.landmark_ids]
        centre = np.array([0.0, 0.5 * (lm[:, 1].min() + lm[:, 1].max()), PIVOT_Z])
        self.origin = centre  # template (eye-line) coordinates of the model origin
        self.vertices = (base - centre).astype(np.float32)
        jaw = (self.tx / 0.070) ** 2 + (np.minimum(self.ty + 0.015, 0.0) / 0.104) ** 2
        self.face_region = (jaw <= 1.0) & (self.ty < 0.045) & (np.abs(self.lon) < 1.4)
        self.face_tris = self.face_region[self.triangles].all(1)
        n_tri = len(self.triangles)
        self.incidence = scipy.sparse.csr_matrix(
            (np.ones(3 * n_tri), (self.triangles.ravel(), np.repeat(np.arange(n_tri), 3))),
            shape=(len(self.vertices), n_tri))
        self.vertex_tris = _incident_triangles(self.triangles, len(self.vertices))
        self._albedo_maps = _albedo_maps(self.tx, self.ty, self.lon, self.front)
        self.face_width = float(np.linalg.norm(self.vertices[self.landmark_ids[0]]
                                               - self.vertices[self.landmark_ids[16]]))

    def sample_identity(self, rng):
        """A random identity: shape ~ N(0, 1) clipped to +-2.5, skin/eye/hair colours from palettes."""
        shape = np.clip(rng.standard_normal(N_IDENTITY), -2.5, 2.5)
        skin = _palette(_SKIN, rng.uniform(0, len(_SKIN) - 1)) + rng.normal(0, 0.02, 3)
        eye = _EYES[rng.integers(len(_EYES))] * rng.uniform(0.8, 1.2)
        hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
        clip = lambda c: np.clip(c, 0.0, 1.0).astype(np.float32)  # noqa: E731
        return Identity(shape.astype(np.float32), clip(skin), clip(eye), clip(hair), int(rng.integers(2**31)))

    def shape(self, identity, aus):
        """(V, 3) float32 vertices of ``identity`` showing ``aus`` ({AU: intensity 0-5})."""
        coeff = np.asarray(identity.shape, np.float32)
        if coeff.shape != (N_IDENTITY,):
            raise ValueError(f"identity.shape must have {N_IDENTITY} coefficients, got {coeff.shape}")
        # einsum, not BLAS: single-threaded and bit-reproducible whatever the BLAS threading
        v = self.vertices + np.einsum("k,kn->n", coeff, self._id_flat).reshape(-1, 3)
        unknown = sorted(set(aus or {}) - set(self.au_index))
        if unknown:
            raise ValueError(f"unsupported action units {unknown}; supported: {sorted(self.au_index)}")
        for au, value in (aus or {}).items():  # a handful of active AUs
            weight = np.float32(np.clip(float(value), 0.0, 5.0) / 5.0)
            if weight > 0:
                v += weight * self.au_modes[self.au_index[au]]
        return v.astype(np.float32)

    def five_points(self, vertices):
        """(5, 3) alignment points: right-eye centre, left-eye centre, nose tip, right, left mouth corner.

        "Right" is the subject's right (image left for a frontal face), the MTCNN / insightface order.
        """
        lm = vertices[self.landmark_ids]
        return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]).astype(np.float32)

    def albedo(self, identity):
        """(V, 3) per-vertex base colour: skin with per-identity mottling, blush, ears, hair.

        Eyes, brows, lips and nostrils are painted per pixel (``texture``).
        """
        rng = np.random.default_rng(identity.id_seed)
        skin = np.asarray(identity.skin_rgb, np.float32)
        hair = np.asarray(identity.hair_rgb, np.float32)
        a = self._albedo_maps
        shift, freq, wave = rng.uniform(-0.012, 0.012), rng.uniform(8, 20), rng.uniform(0.001, 0.004)
        hair_w = smoothstep((self.ty - a["hairline"] - shift - wave * np.sin(a["lon"] * freq)) / 0.006)
        phase = rng.uniform(0, 2 * np.pi, 3)
        mottle = 1.0 + 0.025 * np.sin(a["tx40"] + phase[0]) * np.sin(a["ty50"] + phase[1])
        colour = skin[None] * (a["tint"] * mottle[:, None])
        colour += hair_w[:, None] * (hair[None] - colour)
        return np.clip(colour, 0.0, 1.0).astype(np.float32)


def _albedo_maps(tx, ty, lon, front):
    """Identity-independent per-vertex maps used by ``FaceModel.albedo``."""
    lon = np.abs(lon)
    hairline = _hairline(lon)
    blush = 0.08 * gauss(np.abs(tx), ty, 0.042, -0.035, 0.015, 0.012) * front
    ears = 0.06 * np.exp(-(((lon - 1.72) / 0.14) ** 4 + ((ty + 0.016) / 0.029) ** 4))
    tint = np.stack([np.ones_like(blush), 1.0 - blush - ears, 1.0 - blush - ears], 1)
    return {"hairline": hairline, "lon": lon, "tint": tint.astype(np.float32), "tx40": 40 * tx, "ty50": 50 * ty}


def _incident_triangles(tris, n_vertices, width=8):
    """(V, width) indices of the triangles around each vertex, padded with -1 (pole fans truncated)."""
    vert = tris.ravel()
    order = np.argsort(vert, kind="stable")
    tri_of = order // 3
    first = np.searchsorted(vert[order], np.arange(n_vertices))
    rank = np.arange(len(vert)) - first[vert[order]]
    out = np.full((n_vertices, width), -1, np.int64)
    keep = rank < width
    out[vert[order][keep], rank[keep]] = tri_of[keep]
    return out


def _palette(colours, t):
    i = min(int(t), len(colours) - 2)
    return colours[i] + (t - i) * (colours[i + 1] - colours[i])


def _identity_modes(base, mesh, rng):
    """Smooth symmetric shape modes (1 s.d. each): 13 named modes + 11 random radial bump fields."""
    x, y, z = base.T
    tx, ty, f = mesh.tx, mesh.ty, mesh.front
    ax, sgn = np.abs(tx), np.sign(tx)
    my = mesh.mouth_y
    zero = np.zeros_like(x)
    eye_g = gauss(ax, ty, 0.032, 0.0, 0.012, 0.009) * f
    corner_g = gauss(ax, ty, 0.025, my, 0.012, 0.010) * f
    nose_g = gauss(tx, ty, 0.0, -0.028, 0.010, 0.014) * f
    modes = [
        np.stack([0.035 * x, zero, zero], 1),                                   # head width
        np.stack([zero, 0.05 * np.minimum(y, 0.0), zero], 1),                    # lower-face length
        np.stack([zero, zero, 0.04 * z], 1),                                     # head depth
        np.stack([0.08 * x * smoothstep((-0.05 - y) / 0.04), zero, zero], 1),    # jaw width
        np.stack([zero, zero, 0.004 * nose_g], 1),                               # nose protrusion
        np.stack([0.0025 * sgn * gauss(ax, ty, 0.012, -0.04, 0.006, 0.008) * f, zero, zero], 1),  # nose width
        np.stack([0.0025 * sgn * eye_g, zero, zero], 1),                         # eye spacing
        np.stack([zero, 0.003 * gauss(ax, ty, 0.035, 0.02, 0.02, 0.008) * f, zero], 1),  # brow height
        np.stack([0.003 * sgn * corner_g, zero, zero], 1),                       # mouth width
        np.stack([zero, zero, 0.002 * gauss(ax, ty, 0.0, my, 0.016, 0.008) * f], 1),  # lip fullness
        np.stack([zero, zero, 0.004 * gauss(ax, ty, 0.0, -0.10, 0.018, 0.012) * f], 1),  # chin
        np.stack([zero, zero, 0.003 * gauss(ax, ty, 0.045, -0.018, 0.014, 0.014) * f], 1),  # cheekbones
    ]
    # hair volume: the scalp (above the highest hairline) moves out from the head centre
    centre = np.array([0.0, -0.01, 0.5 * (z.max() + z.min())])
    out = (base - centre) / np.linalg.norm(base - centre, axis=1, keepdims=True)
    scalp = smoothstep((ty - _hairline(np.abs(mesh.lon)) - 0.012) / 0.02)
    modes.append(0.003 * scalp[:, None] * out)
    radial = np.stack([np.sin(mesh.lon), zero, np.cos(mesh.lon)], 1)
    arc = np.stack([np.abs(mesh.lon), ty], 1)
    for _ in range(N_IDENTITY - len(modes)):
        field = zero.copy()
        for _ in range(3):
            c = np.array([rng.uniform(0.0, 1.6), rng.uniform(-0.12, 0.09)])
            s = rng.uniform(0.15, 0.45), rng.uniform(0.012, 0.035)
            field += rng.normal(0, 0.0015) * gauss(arc[:, 0], arc[:, 1], c[0], c[1], s[0], s[1])
        modes.append(field[:, None] * radial)
    return np.stack(modes)


def _au_modes(base, mesh):
    """Displacement (V, 3) of each action unit at intensity 5 (FACS appearance changes), metres."""
    tx, ty, f = mesh.tx, mesh.ty, mesh.front
    ax, sgn, my, h = np.abs(tx), np.sign(tx), mesh.mouth_y, 0.5 * mesh.mouth_gap
    zero = np.zeros_like(tx)
    vec = lambda dx, dy, dz: np.stack([dx * f, dy * f, dz * f], 1)  # noqa: E731
    above_eye = smoothstep((ty - 0.007) / 0.008)
    upper_lid = smoothstep(ty / 0.003)
    lower_lid = smoothstep(-ty / 0.003)
    upper = smoothstep((ty - (my - h)) / (2 * h))      # 1 on the upper mouth row and above
    lower = 1.0 - upper
    corner = gauss(ax, ty, 0.025, my, 0.012, 0.012)
    lip_open = smoothstep((MOUTH_INNER_X - ax) / 0.010)
    near_lip = np.exp(-0.5 * ((ty - my) / 0.012) ** 2)
    g_inner_brow = gauss(ax, ty, 0.018, 0.020, 0.010, 0.012) * above_eye
    g_lower_lid = gauss(ax, ty, 0.032, -0.004, 0.010, 0.003) * lower_lid
    a = {}
    a[1] = vec(zero, 0.009 * g_inner_brow, zero)
    a[2] = vec(zero, 0.009 * gauss(ax, ty, 0.048, 0.018, 0.012, 0.012) * above_eye, zero)
    g4 = gauss(ax, ty, 0.024, 0.020, 0.014, 0.010) * above_eye
    a[4] = vec(-0.004 * sgn * g4, -0.006 * g4, zero)
    a[5] = vec(zero, 0.003 * gauss(ax, ty, 0.032, 0.004, 0.010, 0.005) * upper_lid, zero)
    a[6] = vec(zero, 0.005 * gauss(ax, ty, 0.040, -0.022, 0.014, 0.012) * (1 - upper_lid)
               + 0.0015 * g_lower_lid, 0.002 * gauss(ax, ty, 0.040, -0.022, 0.014, 0.012))
    a[7] = vec(zero, 0.0015 * g_lower_lid - 0.0008 * gauss(ax, ty, 0.032, 0.004, 0.010, 0.004) * upper_lid, zero)
    a[9] = vec(zero, 0.003 * gauss(ax, ty, 0.010, -0.030, 0.010, 0.012)
               + 0.0015 * gauss(ax, ty, 0.0, my + 0.006, 0.014, 0.006) * upper
               - 0.002 * g_inner_brow, zero)
    a[10] = vec(zero, 0.005 * gauss(ax, ty, 0.008, my + 0.006, 0.014, 0.008) * upper, zero)
    # AU12 at intensity 5 is a broad smile: the corners move ~0.02 (most of the half mouth width), enough
    # to see at the small preset's 64-px crops (with 400 AffectNet faces, the earlier 0.008 / 0.009 gave held-out
    # valence CCC 0.09, this 0.13)
    a[12] = vec(0.014 * sgn * corner, 0.016 * corner, -0.006 * corner)
    dimple = gauss(ax, ty, 0.033, my, 0.004, 0.004)
    a[14] = vec(0.002 * sgn * corner, zero, -0.004 * gauss(ax, ty, 0.025, my, 0.010, 0.010) - 0.002 * dimple)
    a[15] = vec(-0.002 * sgn * corner, -0.012 * gauss(ax, ty, 0.025, my, 0.010, 0.012), zero)
    g16 = gauss(ax, ty, 0.008, my - 0.008, 0.012, 0.008) * lower
    a[16] = vec(zero, -0.005 * g16, 0.002 * g16)
    g17 = gauss(ax, ty, 0.0, my - 0.008, 0.014, 0.007) * lower
    a[17] = vec(zero, 0.004 * gauss(ax, ty, 0.0, -0.098, 0.015, 0.014) + 0.002 * g17, 0.002 * g17)
    a[20] = vec(0.009 * sgn * corner, -0.002 * corner, -0.001 * corner)
    a[23] = vec(-0.003 * sgn * corner, -0.0015 * gauss(ax, ty, 0.0, my + 0.008, 0.02, 0.004) * upper
                + 0.0015 * gauss(ax, ty, 0.0, my - 0.009, 0.02, 0.004) * lower, zero)
    interior = mesh.mouth_rows.astype(float)
    a[25] = vec(zero, lip_open * near_lip * (0.0015 * upper - 0.004 * lower), -0.003 * lip_open * interior)
    # AU26: rotate the lower face by 8 degrees about the jaw hinge (linearised); the split between
    # moving and fixed parts is the lip line inside the mouth and widens to a soft cheek band outside.
    band = np.interp(ax, [0.0, MOUTH_INNER_X, 0.036], [h, h, 0.02])
    jaw = smoothstep((my + band - ty) / (2 * band)) * smoothstep((ty + 0.15) / 0.025) \
        * smoothstep((1.45 - np.abs(mesh.lon)) / 0.3)
    rel_y, rel_z = base[:, 1] - (-0.005), base[:, 2] - (-0.025)
    alpha = np.deg2rad(8.0)
    a[26] = np.stack([zero, -alpha * rel_z * jaw, alpha * rel_y * jaw - 0.003 * lip_open * interior], 1)
    side = smoothstep(-tx / 0.004)  # subject's right half (x < 0)
    a[right(12)] = a[12] * side[:, None]
    a[right(14)] = a[14] * side[:, None]
    return a
