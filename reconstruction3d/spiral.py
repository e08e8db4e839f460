"""Spiral sequences for SpiralNet++ convolutions (paper §5.5: "GCN based on spiral convolutions" [40]).

Gong et al., "SpiralNet++: A Fast and Highly Efficient Mesh Convolution Operator", ICCVW 2019
(https://arxiv.org/abs/1911.05856). Facts from shared/research/anchors_landmarks_3d.md §5.1 and
the plan of §5.5.4: a spiral of vertex v is v, then its one-ring in a consistent cyclic order, then
the following rings, each walked in the same rotational sense; it is cut to ``length * dilation``
and sub-sampled with ``[::dilation]``. SpiralNet++ takes the ordered one-rings from OpenMesh's
vertex circulator; here they come from a walk over the oriented faces (for a face (a, b, c), the
ring of a steps from b to c), so no mesh library is needed. The start of each one-ring is the
neighbour without a predecessor on a boundary (where OpenMesh starts too) and the lowest-index
neighbour inside the mesh; exact agreement with OpenMesh's start is not required, only a
consistent rule (§5.5.4).
"""
import numpy as np
from scipy.spatial import cKDTree


def one_rings(faces, n_vertices):
    """Ordered one-ring of every vertex: a list of ``n_vertices`` int64 arrays.

    faces: (F, 3) consistently oriented triangles. Each ring follows the faces' orientation
    (counter-clockwise around the vertex when the faces are counter-clockwise seen from outside).
    A vertex whose neighbourhood is not a single fan (non-manifold) gets its longest walk first,
    then the neighbours the walk missed in index order.
    """
    f = np.asarray(faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= n_vertices):
        raise ValueError(f"face indices must lie in [0, {n_vertices}), got [{f.min()}, {f.max()}]")
    # half-edge "around centre, from src to dst" for each corner of each face
    centre = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    src = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    dst = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
    order = np.lexsort((dst, src, centre))
    centre, src, dst = centre[order], src[order], dst[order]
    bounds = np.searchsorted(centre, np.arange(n_vertices + 1))
    rings = []
    for v in range(n_vertices):
        s, d = src[bounds[v]:bounds[v + 1]].tolist(), dst[bounds[v]:bounds[v + 1]].tolist()
        rings.append(np.asarray(_walk(s, d), dtype=np.int64))
    return rings


def _walk(src, dst):
    """Order the neighbours of one vertex by following ``src[i] -> dst[i]`` steps."""
    if not src:
        return []
    step = {}
    for a, b in zip(src, dst):
        step.setdefault(a, b)                 # non-manifold: keep the lowest-index successor
    neighbours = sorted(set(src) | set(dst))
    heads = sorted(set(src) - set(dst))       # boundary: neighbours without a predecessor
    start = heads[0] if heads else neighbours[0]
    ring, seen = [start], {start}
    nxt = step.get(start)
    while nxt is not None and nxt not in seen:
        ring.append(nxt)
        seen.add(nxt)
        nxt = step.get(nxt)
    ring += [n for n in neighbours if n not in seen]
    return ring


def _rotate_after_seen(ring, seen):
    """``ring`` rotated to start at its first unseen vertex that follows a seen one (cyclically)."""
    n = len(ring)
    for i in range(n):
        if ring[i - 1] in seen and ring[i] not in seen:
            return ring[i:] + ring[:i]
    return ring


def spiral_sequences(faces, n_vertices, length, dilation=1, vertices=None):
    """(n_vertices, length) int64 spirals: vertex, its ordered one-ring, then the following rings.

    Each ring after the first is built by visiting the previous ring's vertices in order and,
    for each, walking its one-ring starting just after its already visited neighbours, adding
    unseen vertices. The sequence is cut to ``length * dilation`` and sub-sampled
    ``[::dilation]``. Where the rings run out (a tiny mesh or component) it is filled with the
    Euclidean nearest vertices not yet in it, which needs ``vertices`` (n, 3); SpiralNet++
    replaces the whole spiral by the k nearest vertices in that case (§5.1), we keep the rings
    found and only fill the tail.
    """
    if length < 1 or dilation < 1:
        raise ValueError(f"spiral length and dilation must be >= 1, got {length}, {dilation}")
    rings = [r.tolist() for r in one_rings(faces, n_vertices)]
    need = length * dilation
    if need > n_vertices:
        raise ValueError(f"spiral of {need} vertices (length {length} x dilation {dilation}) "
                         f"on a mesh of only {n_vertices} vertices")
    tree = None
    out = np.empty((n_vertices, length), dtype=np.int64)
    for v in range(n_vertices):
        seq, seen, last = [v], {v}, [v]
        while len(seq) < need and last:
            ring = []
            for u in last:
                for w in _rotate_after_seen(rings[u], seen):
                    if w not in seen:
                        seen.add(w)
                        ring.append(w)
            seq += ring
            last = ring
        if len(seq) < need:
            if vertices is None:
                raise ValueError(f"vertex {v}: its rings hold only {len(seq)} of the {need} spiral "
                                 f"vertices; pass vertices= to fill the spiral with nearest vertices")
            if tree is None:
                tree = cKDTree(np.asarray(vertices, dtype=np.float64))
            k = min(n_vertices, need + len(seq))  # holds at least `need` vertices outside seq
            _, nearest = tree.query(np.asarray(vertices, dtype=np.float64)[v], k=k)
            seq += [int(w) for w in np.atleast_1d(nearest) if int(w) not in seen][:need - len(seq)]
        out[v] = seq[:need:dilation]
    return out
