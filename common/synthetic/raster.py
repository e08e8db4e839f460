"""Vectorised z-buffer triangle rasteriser for the synthetic face benchmark (issue 3), pure numpy.

Every front-facing triangle is expanded into the integer pixel centres of its bounding box (one
flat array of (triangle, pixel) candidates: no Python loop over triangles or pixels). Candidates
inside their triangle carry the key ``depth << 24 | triangle``, and one scatter-max
(``np.maximum.at``) keeps the nearest triangle of each pixel; equal depths go to the larger
triangle index, so the result is deterministic. Pixel centres are at integer coordinates; x right,
y down, larger z = closer. Barycentric weights are exact for an orthographic camera.
"""

from dataclasses import dataclass

import numpy as np

_TRI_BITS = 24
_DEPTH_STEPS = 64.0  # depth quantisation of the z-buffer key: 1/64 px


@dataclass
class Raster:
    """Result of ``rasterize``: per covered pixel its flat index, triangle and barycentric weights."""
    tri_map: np.ndarray   # (H, W) int64 triangle index, -1 where no triangle covers the pixel
    pixels: np.ndarray    # (P,) int64 flat pixel indices (y * W + x) of the covered pixels
    tris: np.ndarray      # (P,) int64 triangle covering each of them
    bary: np.ndarray      # (P, 3) float32 barycentric weights of that triangle's three vertices


def triangle_planes(verts, tris, dtype=np.float32):
    """Per-triangle planes (F, 9) of ``dtype`` and signed image-space area (F,).

    Rows: w0 = a0 x + b0 y + c0, w1 = a1 x + b1 y + c1, z = z2 + w0 dz0 + w1 dz1 (w2 = 1 - w0 - w1).
    """
    vx, vy, vz = (verts[:, k].astype(np.float64) for k in range(3))
    i0, i1, i2 = tris[:, 0], tris[:, 1], tris[:, 2]
    x0, y0, x1, y1, x2, y2 = vx[i0], vy[i0], vx[i1], vy[i1], vx[i2], vy[i2]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    inv = np.divide(1.0, area, out=np.zeros_like(area), where=np.abs(area) > 1e-12)
    planes = np.stack([(y1 - y2) * inv, (x2 - x1) * inv, (x1 * y2 - x2 * y1) * inv,
                       (y2 - y0) * inv, (x0 - x2) * inv, (x2 * y0 - x0 * y2) * inv,
                       vz[i0] - vz[i2], vz[i1] - vz[i2], vz[i2]], 1)
    return planes.astype(dtype), area


def eval_planes(planes, x, y):
    """Barycentric weights (N, 3) and depth (N,) at points (x, y) of triangles with ``planes`` (N, 9)."""
    w0 = planes[:, 0] * x + planes[:, 1] * y + planes[:, 2]
    w1 = planes[:, 3] * x + planes[:, 4] * y + planes[:, 5]
    z = planes[:, 8] + w0 * planes[:, 6] + w1 * planes[:, 7]
    return np.stack([w0, w1, 1.0 - w0 - w1], 1), z


def rasterize(verts, tris, height, width, eps=1e-5):
    """Z-buffer the triangles ``tris`` (F, 3) of image-space ``verts`` (V, 3) on a height x width grid.

    A triangle is front-facing when it is counter-clockwise seen from the camera in a y-up frame,
    i.e. has a negative signed area in image coordinates (y down); the others are culled.
    """
    verts = np.asarray(verts, np.float32)
    vx, vy = verts[:, 0], verts[:, 1]
    x = vx[tris]  # (F, 3)
    y = vy[tris]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    lo = lambda a: np.minimum(np.minimum(a[:, 0], a[:, 1]), a[:, 2])  # noqa: E731  (faster than .min(1))
    hi = lambda a: np.maximum(np.maximum(a[:, 0], a[:, 1]), a[:, 2])  # noqa: E731
    lox = np.maximum(np.ceil(lo(x)), 0).astype(np.int32)
    hix = np.minimum(np.floor(hi(x)), width - 1).astype(np.int32)
    loy = np.maximum(np.ceil(lo(y)), 0).astype(np.int32)
    hiy = np.minimum(np.floor(hi(y)), height - 1).astype(np.int32)
    nx, ny = np.maximum(hix - lox + 1, 0), np.maximum(hiy - loy + 1, 0)
    count = nx * ny
    keep = np.nonzero((area < -1e-9) & (count > 0))[0]
    planes, _ = triangle_planes(verts, tris[keep])
    count, nx = count[keep], nx[keep]
    n = int(count.sum())
    start = (np.cumsum(count) - count).astype(np.int32)
    local = np.arange(n, dtype=np.int32) - np.repeat(start, count)
    width_rep = np.repeat(nx, count)
    row = local // width_rep
    px = np.repeat(lox[keep], count) + (local - row * width_rep)
    py = np.repeat(loy[keep], count) + row
    pl = np.repeat(planes, count, axis=0)
    fx, fy = px.astype(np.float32), py.astype(np.float32)
    w0 = pl[:, 0] * fx + pl[:, 1] * fy + pl[:, 2]
    w1 = pl[:, 3] * fx + pl[:, 4] * fy + pl[:, 5]
    hit = np.nonzero((w0 >= -eps) & (w1 >= -eps) & (w0 + w1 <= 1.0 + eps))[0]
    z = pl[hit, 8] + w0[hit] * pl[hit, 6] + w1[hit] * pl[hit, 7]
    local_tri = np.repeat(np.arange(keep.size, dtype=np.int64), count)[hit]
    pix = py[hit].astype(np.int64) * width + px[hit]
    z_lo = z.min() if z.size else 0.0
    key = (np.round((z - z_lo) * _DEPTH_STEPS).astype(np.int64) << _TRI_BITS) | local_tri
    best = np.full(height * width, -1, np.int64)
    np.maximum.at(best, pix, key)  # unbuffered scatter-max: the z-buffer
    pixels = np.nonzero(best >= 0)[0]
    win = best[pixels] & ((1 << _TRI_BITS) - 1)
    tri_map = np.full(height * width, -1, np.int64)
    tri_map[pixels] = keep[win]
    bary, _ = eval_planes(planes[win], (pixels % width).astype(np.float32),
                          (pixels // width).astype(np.float32))
    bary = np.clip(bary, 0.0, 1.0)
    bary /= np.maximum(bary.sum(1, keepdims=True), 1e-12)
    return Raster(tri_map.reshape(height, width), pixels, keep[win], bary.astype(np.float32))
