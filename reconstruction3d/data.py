"""3D face reconstruction samples (paper §5.5, App. A.2) and the dataset check (DESIGN.md "Data").

Pre-processing: the square crop around the box of the 68 ground-truth landmarks (enlarged by
``box_scale``) is mapped to ``input_size`` pixels; at training time the App. A.2 augmentation
(scale 0.85-1.15, in-plane rotation +-45 deg, translation +-10 % of the crop) is composed into the
same matrix, so the image is resampled once (``common.transforms``). The vertices move with the
image: x, y by the 2-D affine, z multiplied by the same scale factor sqrt|det A| (the affine is a
similarity, so this is the 3-D similarity rotating about the viewing axis). Targets are then
normalised: x, y to [-1, 1] over the crop, z centred on the mesh's mean depth (the depth offset is
unobservable under the orthographic camera of 300W-LP) and divided by the same half crop size.

    python -m reconstruction3d.data --check --dataset {300wlp,aflw2000,florence} --root R --topology T
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.files import rgb8
from common.transforms import affine_from_params, apply_to_points, crop_from_box, random_affine_params, warp_image
from reconstruction3d import formats
from reconstruction3d.mesh_model import load_mesh_model, resolve, sample_vertices

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_image(path):
    """(3, H, W) uint8 tensor, or None when the file cannot be decoded (skipped and counted)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(rgb8(im))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)


def matrix_scale(matrix):
    """Isotropic scale sqrt|det| of the linear part of (..., 3, 3) similarity matrices."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    return torch.linalg.det(m[..., :2, :2]).abs().sqrt()


def normalise_vertices(vertices, matrix, size):
    """Image-frame (V, 3) -> normalised crop frame (V, 3) float32 (module docstring)."""
    v = torch.as_tensor(vertices, dtype=torch.float64)
    xy = apply_to_points(matrix, v[:, :2])
    z = v[:, 2] * matrix_scale(matrix)
    half = size / 2.0
    out = torch.cat([(xy - (size - 1) / 2.0) / half, ((z - z.mean()) / half)[:, None]], dim=1)
    return out.float()


def denormalise_vertices(pred, matrix, size):
    """Normalised crop frame (..., V, 3) -> image frame (..., V, 3) float64 (z up to an offset)."""
    p = torch.as_tensor(pred, dtype=torch.float64)
    m = torch.as_tensor(matrix, dtype=torch.float64)
    half = size / 2.0
    xy = apply_to_points(torch.linalg.inv(m), p[..., :2] * half + (size - 1) / 2.0)
    z = p[..., 2] * half / matrix_scale(m)[..., None]
    return torch.cat([xy, z[..., None]], dim=-1)


class MeshAugment:
    """App. A.2, 3D reconstruction: scale U(scale), rotation U(+-rotation) deg, translation
    U(+-translation) of the crop size per axis; no flip (300W-LP ships mirrored copies)."""

    def __init__(self, *, rotation, scale, translation):
        self.rotation, self.scale, self.translation = rotation, tuple(scale), translation

    def sample_matrix(self, size, generator=None):
        p = random_affine_params(generator, self.rotation, self.scale, self.translation, 0.0)
        return affine_from_params(p, (size, size))


class MeshDataset(torch.utils.data.Dataset):
    """Crops of (key, image, mat) ``items`` with normalised vertex targets.

    Items: image (3, S, S) normalised; target (V, 3) float32; matrix (3, 3) float64 image -> crop;
    index; valid (False for an unreadable image: zeros, skipped by the loss and counted). With
    ``with_gt``: also landmarks (68, 3) and vertices (V, 3) in the image frame, and yaw (deg).
    """

    def __init__(self, items, topology, bfm=None, *, input_size, box_scale, augment=None,
                 with_gt=False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.items, self.topology, self.bfm = list(items), topology, bfm
        self.input_size, self.box_scale, self.augment, self.with_gt = input_size, box_scale, augment, with_gt
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self):
        return len(self.items)

    def labels(self, i, height):
        """(vertices (V, 3), landmarks (68, 3), pose degrees (3,)) of item i, image frame."""
        key, _, mat_path = self.items[i]
        mat = formats.read_mat(mat_path)
        verts = sample_vertices(mat, height, self.bfm, self.topology.n_vertices, mat_path)
        lm = formats.landmarks68(mat, verts, self.topology.landmark_ids, mat_path)
        return verts, lm, formats.pose_degrees(mat, mat_path)

    def __getitem__(self, i):
        s, n = self.input_size, self.topology.n_vertices
        raw = read_image(self.items[i][1])
        if raw is None:
            item = {"image": torch.zeros(3, s, s), "target": torch.zeros(n, 3),
                    "matrix": torch.eye(3, dtype=torch.float64), "index": i, "valid": False}
            if self.with_gt:
                item.update(landmarks=torch.zeros(68, 3, dtype=torch.float64),
                            vertices=torch.zeros(n, 3), yaw=0.0)
            return item
        verts, lm, pose = self.labels(i, raw.shape[1])
        box = np.concatenate([lm[:, :2].min(0), lm[:, :2].max(0)])
        matrix = crop_from_box(box, s, self.box_scale)
        if self.augment is not None:
            matrix = self.augment.sample_matrix(s) @ matrix
        image = warp_image(raw.float() / 255.0, matrix, s)
        item = {"image": (image - self.mean) / self.std, "target": normalise_vertices(verts, matrix, s),
                "matrix": matrix, "index": i, "valid": True}
        if self.with_gt:
            item.update(landmarks=torch.from_numpy(lm), vertices=torch.from_numpy(verts).float(),
                        yaw=float(pose[1]))
        return item


def load_topology(path, root):
    """``load_mesh_model`` of ``path`` (relative paths resolved against the data root)."""
    return load_mesh_model(resolve(path, root))


def draw_grid(dataset, path, *, n, columns=4):
    """PNG grid of crops with the projected 68 landmark vertices (green) and a sparse mesh (grey)."""
    s = dataset.input_size
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    rows = (len(items) + columns - 1) // columns
    grid = Image.new("RGB", (columns * s, max(rows, 1) * s))
    ids = dataset.topology.landmark_ids
    sparse = np.arange(0, dataset.topology.n_vertices, max(1, dataset.topology.n_vertices // 400))
    for k, item in enumerate(items):
        img = (item["image"] * dataset.std + dataset.mean).clamp(0, 1)
        tile = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        draw = ImageDraw.Draw(tile)
        crop = item["target"][:, :2].double() * (s / 2.0) + (s - 1) / 2.0
        for x, y in crop[sparse].tolist():
            draw.point((x, y), fill=(160, 160, 160))
        for x, y in crop[ids].tolist():
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 255, 0))
        grid.paste(tile, ((k % columns) * s, (k // columns) * s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def _stats(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def check(name, root, topology_path, *, out, input_size, box_scale, n_grid):
    """Counts, label statistics, a PNG grid and the crop round-trip error of every sample."""
    items = formats.list_samples(name, root)
    topology, bfm = load_topology(topology_path, root)
    ds = MeshDataset(items, topology, bfm, input_size=input_size, box_scale=box_scale, with_gt=True)
    yaws, sides, round_trip, unreadable = [], [], [], []
    for i in range(len(ds)):
        item = ds[i]
        if not item["valid"]:
            unreadable.append(items[i][1])
            continue
        gt = item["vertices"].double()
        back = denormalise_vertices(item["target"], item["matrix"], input_size)
        err = (back[:, :2] - gt[:, :2]).norm(dim=1).max().item()
        dz = (back[:, 2] - back[:, 2].mean()) - (gt[:, 2] - gt[:, 2].mean())
        round_trip.append(max(err, dz.abs().max().item()))
        lm = item["landmarks"].numpy()
        sides.append(float(np.ptp(lm[:, :2], axis=0).max()))
        yaws.append(abs(item["yaw"]))
    if not yaws:
        raise SystemExit(f"dataset check failed: no readable image among {len(items)} in {name}")
    yaws = np.asarray(yaws)
    report = {"dataset": name, "count": len(items), "official_count": formats.OFFICIAL_COUNTS[name],
              "unreadable_images": len(unreadable), "vertices": topology.n_vertices,
              "topology": str(topology.source), "bfm": bfm is not None,
              "abs_yaw_deg": _stats(yaws),
              "yaw_bins": [int((yaws <= 30).sum()), int(((yaws > 30) & (yaws <= 60)).sum()), int((yaws > 60).sum())],
              "landmark_box_side_px": _stats(sides),
              "round_trip_max_px": float(max(round_trip))}
    if name == "florence":
        subjects = sorted({formats.subject_of(k) for k, _, _ in items})
        report["subjects"] = len(subjects)
        report["scan_vertices"] = {s: len(formats.read_obj_vertices(formats.scan_path(root, s))) for s in subjects}
    report["grid"] = os.path.join(out, f"check_{name}.png")
    draw_grid(MeshDataset(items, topology, bfm, input_size=input_size, box_scale=box_scale),
              report["grid"], n=n_grid)
    if unreadable:
        print(f"unreadable images ({len(unreadable)}): {unreadable[:5]}", file=sys.stderr)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reconstruction3d.data", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", required=True, help="run the dataset check")
    parser.add_argument("--dataset", required=True, choices=sorted(formats.FOLDERS))
    parser.add_argument("--root", required=True, help="folder holding 300W_LP/, AFLW2000/, Florence/ (or one of them)")
    parser.add_argument("--topology", default="face_model/mesh_topology.mat",
                        help="BFM.mat (real data) or mesh_topology.mat (synthetic); relative to --root")
    parser.add_argument("--out", default="runs/check", help="folder for the PNG grid")
    parser.add_argument("--input-size", type=int, default=256, help="crop size (see configs/300wlp.yaml)")
    parser.add_argument("--box-scale", type=float, default=1.5, help="crop side / landmark-box side")
    parser.add_argument("--n-grid", type=int, default=16, help="samples drawn in the PNG grid")
    args = parser.parse_args(argv)
    try:
        report = check(args.dataset, args.root, args.topology, out=args.out, input_size=args.input_size,
                       box_scale=args.box_scale, n_grid=args.n_grid)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"dataset check failed: {e}")
    print(json.dumps(report, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
