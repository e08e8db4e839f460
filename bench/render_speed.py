"""Benchmark of the synthetic face renderer (issue 3): images/s at 256 x 256 on one CPU core, and the
vectorised rasteriser against the per-triangle reference scheme.

    python bench/render_speed.py [--n 100] [--size 256] [--seed 0]

Two measurements, in this one run, with one torch / BLAS thread:

- the whole ``render_face`` pipeline (identity, AUs, pose, lighting, cluttered background, an
  occluder on every third image, labels) on ``--n`` random faces: images/s (target >= 20);
- the z-buffer alone on the same projected meshes: ours (``common.synthetic.raster.rasterize``,
  one flat array of (triangle, pixel) candidates) against the textbook scheme, a Python loop
  over triangles that tests each triangle's bounding-box pixels with numpy; prints the speed-up
  and asserts both give the same triangle at every pixel.
"""
import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.synthetic import emotion  # noqa: E402
from common.synthetic.face_model import FaceModel  # noqa: E402
from common.synthetic.raster import rasterize  # noqa: E402
from common.synthetic.render import project, render_face  # noqa: E402


def reference_rasterize(verts, tris, height, width):
    """Per-triangle loop: bounding-box pixels, edge tests and a depth compare for each triangle."""
    depth = np.full((height, width), -np.inf)
    tri_map = np.full((height, width), -1, np.int64)
    for t, (i, j, k) in enumerate(tris):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[i], verts[j], verts[k]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area >= -1e-9:
            continue
        xa, xb = max(int(np.ceil(min(x0, x1, x2))), 0), min(int(np.floor(max(x0, x1, x2))), width - 1)
        ya, yb = max(int(np.ceil(min(y0, y1, y2))), 0), min(int(np.floor(max(y0, y1, y2))), height - 1)
        if xa > xb or ya > yb:
            continue
        y, x = np.mgrid[ya:yb + 1, xa:xb + 1]
        w0 = ((x1 - x) * (y2 - y) - (x2 - x) * (y1 - y)) / area
        w1 = ((x2 - x) * (y0 - y) - (x0 - x) * (y2 - y)) / area
        w2 = 1.0 - w0 - w1
        z = w0 * z0 + w1 * z1 + w2 * z2
        win = (w0 >= -1e-5) & (w1 >= -1e-5) & (w2 >= -1e-5) & (z > depth[y, x])
        depth[y[win], x[win]] = z[win]
        tri_map[y[win], x[win]] = t
    return tri_map, depth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="faces to render")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = FaceModel(seed=0)
    rng = np.random.default_rng(args.seed)
    jobs = []
    for i in range(args.n):
        ident = model.sample_identity(rng)
        aus = emotion.prototype_aus(int(rng.integers(8)), float(rng.uniform(1, 5)), rng)
        pose = rng.uniform(-90, 90), rng.uniform(-30, 30), rng.uniform(-30, 30)
        jobs.append((ident, aus, pose, float(rng.uniform(0.8, 1.2)), i % 3 == 0))
    render_face(model, jobs[0][0], {}, yaw=0, pitch=0, roll=0, size=args.size, rng=rng)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for ident, aus, (yaw, pitch, roll), scale, occ in jobs:
        render_face(model, ident, aus, yaw=yaw, pitch=pitch, roll=roll, size=args.size, rng=rng,
                    scale=scale, occluder=occ)
    wall, cpu = (time.perf_counter() - start) / args.n, (time.process_time() - cpu) / args.n
    # CPU time of this (single-threaded) process is what one core delivers, even on a busy machine
    print(f"render_face: {1.0 / cpu:.1f} images/s at {args.size}x{args.size} on one core "
          f"({1000 * cpu:.1f} ms CPU, {1000 * wall:.1f} ms wall per image, {args.n} images; target >= 20 images/s)")

    meshes = []
    for ident, aus, (yaw, pitch, roll), scale, _ in jobs[:5]:
        meshes.append(project(model, model.shape(ident, aus), yaw, pitch, roll, args.size, scale)[0])
    start = time.process_time()
    ours = [rasterize(v, model.triangles, args.size, args.size).tri_map for v in meshes]
    t_ours = (time.process_time() - start) / len(meshes)
    start = time.process_time()
    ref = [reference_rasterize(v.astype(np.float64), model.triangles, args.size, args.size) for v in meshes]
    t_ref = (time.process_time() - start) / len(meshes)
    agree = np.mean([np.mean(a == r[0]) for a, r in zip(ours, ref)])
    print(f"z-buffer (CPU time): ours {1000 * t_ours:.1f} ms, per-triangle loop {1000 * t_ref:.1f} ms, "
          f"speed-up x{t_ref / t_ours:.1f}; same triangle at {100 * agree:.2f} % of pixels")
    assert agree > 0.995, "the two rasterisers disagree"  # ties at shared edges may differ


if __name__ == "__main__":
    main()
