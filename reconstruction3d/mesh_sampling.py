"""Mesh hierarchy for the spiral decoder (paper §5.5): quadric decimation, down/up-sampling matrices, spirals.

The COMA recipe as SpiralNet++ uses it (Ranjan et al., ECCV 2018; shared/research/
anchors_landmarks_3d.md §5.3 and §5.5.2-3), written in numpy/scipy without psbody or OpenMesh:

- Decimation: Garland-Heckbert quadric error metric, per-vertex quadrics summed from the planes
  of the incident faces; an edge collapse keeps one endpoint (the cheaper one to keep), so the
  coarse vertices are a subset of the fine ones and the down-sampling matrix D (n_coarse x
  n_fine) is a 0/1 selection. Two additions to COMA: boundary-edge constraint planes (Garland &
  Heckbert), so an open mesh keeps its outline, and the link condition (a collapse is refused
  when the endpoints share more neighbours than faces, or would glue two boundaries), so every
  level stays a 2-manifold whose one-rings can be walked for the spirals.
- Up-sampling U (n_fine x n_coarse): each fine vertex is projected on the closest point of the
  coarse surface (numpy point-to-triangle projection, Ericson, "Real-Time Collision Detection"
  §5.1.5, on a shortlist of faces by centroid distance) and gets that point's barycentric
  weights. COMA solves an unconstrained least-squares for these coefficients; barycentric weights
  sum to 1, so U reproduces constant fields exactly and linear fields on the coarse surface.
- Spirals per level: ``reconstruction3d.spiral``.

The decimation runs in Python (about a minute for the 53,215-vertex BFM), so ``build_hierarchy`` caches
the result on disk under a key hashed from the template, the faces and the settings, and loads it
on every later run.
"""
import hashlib
import heapq
import json
import math
import os

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from reconstruction3d.spiral import spiral_sequences

CACHE_VERSION = 1  # bump when the algorithm changes, so stale caches are not reused


def default_cache_dir():
    return os.path.join(os.path.expanduser("~"), ".cache", "facerep", "mesh")


def _plane_quadrics(normals, points):
    """(K, 4, 4) p p^T for the planes through ``points`` with unit ``normals`` (zero normal: none)."""
    p = np.concatenate([normals, -(normals * points).sum(1, keepdims=True)], axis=1)
    return p[:, :, None] * p[:, None, :]


def vertex_quadrics(vertices, faces):
    """(V, 4, 4) quadrics: the unit planes (n, -n.a) of each vertex's faces, plus, on a boundary
    edge, the plane through the edge perpendicular to its face (Garland & Heckbert's boundary
    constraint, which COMA lacks: it keeps the outline of an open mesh such as the BFM face)."""
    tri = vertices[faces]                                              # F x 3 x 3
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = _unit(n)                                                       # degenerate face: no plane
    q = np.zeros((len(vertices), 4, 4))
    q_face = _plane_quadrics(n, tri[:, 0])
    for k in range(3):
        np.add.at(q, faces[:, k], q_face)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    code = directed[:, 0] * len(vertices) + directed[:, 1]
    boundary = ~np.isin(directed[:, 1] * len(vertices) + directed[:, 0], code)
    a, b = vertices[directed[boundary, 0]], vertices[directed[boundary, 1]]
    q_edge = _plane_quadrics(_unit(np.cross(b - a, n[owner[boundary]])), a)
    np.add.at(q, directed[boundary, 0], q_edge)
    np.add.at(q, directed[boundary, 1], q_edge)
    return q


def _unit(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def decimate(vertices, faces, n_target):
    """Quadric edge collapses until ``n_target`` vertices remain.

    Returns (kept: sorted int64 indices of the surviving input vertices, new_faces (F', 3)
    indexing into ``kept``). Vertices not used by any face are dropped first.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.array(faces, dtype=np.int64)
    q = vertex_quadrics(v, f)
    vf = [set() for _ in range(len(v))]
    nb = [set() for _ in range(len(v))]
    for fid, tri in enumerate(f.tolist()):
        for k in range(3):
            vf[tri[k]].add(fid)
            nb[tri[k]].update((tri[k - 1], tri[k - 2]))
    alive = np.array([len(s) > 0 for s in vf])
    face_alive = np.ones(len(f), dtype=bool)
    stamp = [0] * len(v)
    n_alive = int(alive.sum())
    if not 3 <= n_target <= n_alive:
        raise ValueError(f"cannot decimate a mesh of {n_alive} vertices to {n_target}")

    def entry(a, b):
        h_a, h_b = np.append(v[a], 1.0), np.append(v[b], 1.0)
        qs = q[a] + q[b]
        keep_a, keep_b = float(h_a @ qs @ h_a), float(h_b @ qs @ h_b)
        keep, drop, cost = (a, b, keep_a) if keep_a <= keep_b else (b, a, keep_b)
        return (cost, keep, drop, stamp[keep], stamp[drop])

    def on_boundary(a):
        return any(len(vf[a] & vf[n]) == 1 for n in nb[a])

    def collapsible(a, b):
        shared = len(vf[a] & vf[b])
        if len(nb[a] & nb[b]) != shared:
            return False
        return not (shared == 2 and on_boundary(a) and on_boundary(b))

    heap, rebuilt_at = [], None
    while n_alive > n_target:
        if not heap:  # start, or refused edges whose neighbourhood has changed since: queue them all
            if rebuilt_at == n_alive:
                raise ValueError(f"decimation stopped at {n_alive} vertices (target {n_target}): no "
                                 f"edge can collapse without breaking the mesh's manifold structure")
            heap = [entry(a, b) for a in np.flatnonzero(alive).tolist() for b in nb[a] if a < b]
            heapq.heapify(heap)
            rebuilt_at = n_alive
        _, keep, drop, s_keep, s_drop = heapq.heappop(heap)
        if (not alive[keep] or not alive[drop] or stamp[keep] != s_keep or stamp[drop] != s_drop
                or drop not in nb[keep] or not collapsible(keep, drop)):
            continue
        for fid in vf[drop]:
            tri = f[fid]
            if keep in tri:                                            # the collapsed edge's faces
                face_alive[fid] = False
                for u in tri.tolist():
                    if u != drop:
                        vf[u].discard(fid)
            else:
                tri[tri == drop] = keep
                vf[keep].add(fid)
        for n in nb[drop]:
            nb[n].discard(drop)
            if n != keep:
                nb[n].add(keep)
                nb[keep].add(n)
        nb[keep].discard(drop)
        vf[drop], nb[drop] = set(), set()
        q[keep] += q[drop]
        alive[drop] = False
        n_alive -= 1
        stamp[keep] += 1
        for n in nb[keep]:
            heapq.heappush(heap, entry(keep, n))
    kept = np.flatnonzero(alive)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return kept, remap[f[face_alive]]


def closest_barycentric(p, a, b, c):
    """Barycentric weights (M, 3) of the closest point to p on triangle (a, b, c); all (M, 3).

    Vectorised form of Ericson's region tests (vertex, edge or face region of the triangle).
    """
    ab, ac = b - a, c - a
    dot = lambda x, y: (x * y).sum(-1)                                  # noqa: E731
    ap, bp, cp = p - a, p - b, p - c
    d1, d2, d3, d4, d5, d6 = dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def safe_div(x, y):
        return np.divide(x, y, out=np.zeros_like(x), where=np.abs(y) > 1e-300)

    denom = va + vb + vc
    v_in, w_in = safe_div(vb, denom), safe_div(vc, denom)
    out = np.stack([1 - v_in - w_in, v_in, w_in], -1)
    t_ab, t_ac = safe_div(d1, d1 - d3), safe_div(d2, d2 - d6)
    t_bc = safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    one, zero = np.ones_like(d1), np.zeros_like(d1)
    regions = [  # lowest precedence first: later assignments win, as Ericson's early returns do
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), np.stack([zero, 1 - t_bc, t_bc], -1)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, zero, t_ac], -1)),
        ((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], -1)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, zero], -1)),
        ((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], -1)),
        ((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], -1)),
    ]
    for mask, value in regions:
        out[mask] = value[mask]
    return out


def upsample_matrix(fine_vertices, coarse_vertices, coarse_faces, kept=None, shortlist=16):
    """(n_fine, n_coarse) CSR matrix: barycentric weights of each fine vertex's closest point on
    the coarse surface. ``kept[i]`` (fine index of coarse vertex i) makes those rows exact one-hots."""
    fine = np.asarray(fine_vertices, dtype=np.float64)
    cv = np.asarray(coarse_vertices, dtype=np.float64)
    cf = np.asarray(coarse_faces, dtype=np.int64)
    k = min(shortlist, len(cf))
    _, cand = cKDTree(cv[cf].mean(1)).query(fine, k=k)                  # n_fine x k faces
    cand = cand.reshape(len(fine), k)
    tri = cv[cf[cand]]                                                  # n_fine x k x 3 x 3
    pts = np.broadcast_to(fine[:, None], (len(fine), k, 3))
    bary = closest_barycentric(pts, tri[:, :, 0], tri[:, :, 1], tri[:, :, 2])
    closest = (bary[..., None] * tri).sum(-2)
    best = np.linalg.norm(closest - pts, axis=-1).argmin(1)
    rows = np.arange(len(fine))
    weights, cols = bary[rows, best], cf[cand[rows, best]]              # n_fine x 3 each
    if kept is not None:
        kept = np.asarray(kept, dtype=np.int64)
        weights[kept], cols[kept] = [1.0, 0.0, 0.0], np.arange(len(kept))[:, None]
    r, w, c = np.repeat(rows, 3), weights.reshape(-1), cols.reshape(-1)
    nz = w > 1e-12
    return sp.csr_matrix((w[nz], (r[nz], c[nz])), shape=(len(fine), len(cv)))


def hierarchy_key(vertices, faces, factors, lengths, dilations):
    """sha256 of the template, its faces and the settings (the cache file's name)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    h.update(json.dumps([CACHE_VERSION, list(factors), list(lengths), list(dilations)]).encode())
    return h.hexdigest()


def _compute(vertices, faces, factors, lengths, dilations):
    """Arrays of every level, as stored in the cache file."""
    arrays = {}
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    for i, factor in enumerate(factors):
        arrays[f"v{i}"], arrays[f"f{i}"] = v, f
        kept, coarse_f = decimate(v, f, math.ceil(len(v) / factor))
        up = upsample_matrix(v, v[kept], coarse_f, kept=kept).tocoo()
        arrays[f"keep{i}"] = kept
        arrays[f"up{i}_row"], arrays[f"up{i}_col"], arrays[f"up{i}_val"] = up.row, up.col, up.data
        v, f = v[kept], coarse_f
    arrays[f"v{len(factors)}"], arrays[f"f{len(factors)}"] = v, f
    for i in range(len(factors) + 1):
        arrays[f"spiral{i}"] = spiral_sequences(arrays[f"f{i}"], len(arrays[f"v{i}"]), lengths[i],
                                                dilations[i], vertices=arrays[f"v{i}"])
    return arrays


def build_hierarchy(vertices, faces, factors, lengths, dilations, cache_dir=None):
    """Levels 0 (the template) .. len(factors), each ``factors[i]`` times coarser than the last.

    lengths, dilations: spiral length and dilation per level (len(factors) + 1 entries).
    Returns a dict: ``vertices``/``faces``/``spirals`` (lists per level), ``down`` (list of
    CSR (n_{i+1}, n_i) 0/1 selections), ``up`` (list of CSR (n_i, n_{i+1})) and ``key``.
    With ``cache_dir``, the arrays are read from / written (atomically) to ``cache_dir/KEY.npz``.
    """
    if len(lengths) != len(factors) + 1 or len(dilations) != len(factors) + 1:
        raise ValueError(f"need one spiral length and dilation per level ({len(factors) + 1}); got "
                         f"lengths={list(lengths)}, dilations={list(dilations)}")
    key = hierarchy_key(vertices, faces, factors, lengths, dilations)
    path = os.path.join(cache_dir, f"{key}.npz") if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        arrays = _compute(vertices, faces, factors, lengths, dilations)
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.tmp{os.getpid()}.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
    n = len(factors)
    sizes = [len(arrays[f"v{i}"]) for i in range(n + 1)]
    down = [sp.csr_matrix((np.ones(sizes[i + 1]), (np.arange(sizes[i + 1]), arrays[f"keep{i}"])),
                          shape=(sizes[i + 1], sizes[i])) for i in range(n)]
    up = [sp.csr_matrix((arrays[f"up{i}_val"], (arrays[f"up{i}_row"], arrays[f"up{i}_col"])),
                        shape=(sizes[i], sizes[i + 1])) for i in range(n)]
    return {"vertices": [arrays[f"v{i}"] for i in range(n + 1)],
            "faces": [arrays[f"f{i}"] for i in range(n + 1)],
            "spirals": [arrays[f"spiral{i}"] for i in range(n + 1)],
            "down": down, "up": up, "key": key}
