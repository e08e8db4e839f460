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

For files with ``pt3d_68`` the check also measures the mean 2-D offset between ``pt3d_68`` and the 68
landmark vertices of the file's own mesh (issue 19): ~0 when both share one pixel convention.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.files import rgb8
from common.metrics.landmarks import aflw2000_yaw_bins
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
    index; valid (False for an unreadable image: zeros, skipped by the loss and counted); mesh (False
    when the file has no mesh: zero target). With ``with_gt``: also landmarks (68, 3) and vertices
    (V, 3) in the image frame, and yaw (deg). ``pt3d_one_based`` subtracts 1 from pt3d_68's x, y
    (config ``data.pt3d_one_based``); ``mesh_optional`` accepts files with pt3d_68 and no mesh (the
    user's Florence renders of real scans, where the scan is the ground truth).
    """

    def __init__(self, items, topology, bfm=None, *, input_size, box_scale, augment=None,
                 with_gt=False, pt3d_one_based=False, mesh_optional=False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.items, self.topology, self.bfm = list(items), topology, bfm
        self.input_size, self.box_scale, self.augment, self.with_gt = input_size, box_scale, augment, with_gt
        self.pt3d_one_based, self.mesh_optional = pt3d_one_based, mesh_optional
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self):
        return len(self.items)

    def labels(self, i, height):
        """(vertices (V, 3) or None, landmarks (68, 3), pose degrees (3,) or None) of item i, image frame."""
        key, _, mat_path = self.items[i]
        mat = formats.read_mat(mat_path)
        verts = None
        if not self.mesh_optional or formats.holds_mesh(mat):
            verts = sample_vertices(mat, height, self.bfm, self.topology.n_vertices, mat_path)
        lm = formats.landmarks68(mat, verts, self.topology.landmark_ids, mat_path, one_based=self.pt3d_one_based)
        return verts, lm, formats.pose_degrees(mat, mat_path) if self.with_gt else None

    def __getitem__(self, i):
        s, n = self.input_size, self.topology.n_vertices
        raw = read_image(self.items[i][1])
        if raw is None:
            item = {"image": torch.zeros(3, s, s), "target": torch.zeros(n, 3),
                    "matrix": torch.eye(3, dtype=torch.float64), "index": i, "valid": False, "mesh": False}
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
        mesh = verts is not None
        item = {"image": (image - self.mean) / self.std, "matrix": matrix, "index": i, "valid": True, "mesh": mesh,
                "target": normalise_vertices(verts, matrix, s) if mesh else torch.zeros(n, 3)}
        if self.with_gt:
            item.update(landmarks=torch.from_numpy(lm), yaw=float(pose[1]),
                        vertices=torch.from_numpy(verts).float() if mesh else torch.zeros(n, 3))
        return item


def load_topology(path, root):
    """``load_mesh_model`` of ``path`` (relative paths resolved against the data root)."""
    return load_mesh_model(resolve(path, root))


def draw_grid(dataset, path, *, n, columns=4):
    """PNG grid of crops with the projected 68 landmark vertices (green) and a sparse mesh (grey); for a
    file without a mesh, its 68 landmarks (then ``dataset`` must be ``with_gt``)."""
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
        if item["mesh"]:
            for x, y in crop[sparse].tolist():
                draw.point((x, y), fill=(160, 160, 160))
        points = crop[ids] if item["mesh"] else apply_to_points(item["matrix"], item["landmarks"][:, :2])
        for x, y in points.tolist():
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 255, 0))
        grid.paste(tile, ((k % columns) * s, (k // columns) * s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def _stats(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def yaw_bin_counts(yaw):
    """Images per AFLW2000-3D |yaw| bin [0, 30], (30, 60], (60, 90] (``aflw2000_yaw_bins``, anchors §4.3)."""
    return [int(m.sum()) for m in aflw2000_yaw_bins(yaw).values()]


def pt3d_offset_report(offsets):
    """Mean 2-D offset of pt3d_68 from the mesh's landmark vertices over per-image rows (dx, dy, mean
    distance), as stored and as if pt3d_68 were 1-based (x, y minus 1), in pixels."""
    o = np.asarray(offsets, dtype=np.float64)
    dx, dy = float(o[:, 0].mean()), float(o[:, 1].mean())
    return ({"dx": dx, "dy": dy, "norm": float(np.hypot(dx, dy)), "mean_point_distance": float(o[:, 2].mean()),
             "images": len(o)},
            {"dx": dx - 1.0, "dy": dy - 1.0, "norm": float(np.hypot(dx - 1.0, dy - 1.0))})


def check(name, root, topology_path, *, out, input_size, box_scale, n_grid, pose_file=formats.POSE_FILE):
    """Counts, label statistics, a PNG grid, the crop round-trip error of every mesh, the pt3d_68 vs mesh
    offset and, for AFLW2000-3D, the yaw bins of both sources (Pose_Para and the 3DDFA pose file)."""
    items = formats.list_samples(name, root)
    topology, bfm = load_topology(topology_path, root)
    ds = MeshDataset(items, topology, bfm, input_size=input_size, box_scale=box_scale, with_gt=True,
                     mesh_optional=name == "florence")
    yaws, sides, round_trip, offsets, unreadable = [], [], [], [], []
    for i in range(len(ds)):
        item = ds[i]
        if not item["valid"]:
            unreadable.append(items[i][1])
            continue
        lm = item["landmarks"].numpy()
        sides.append(float(np.ptp(lm[:, :2], axis=0).max()))
        yaws.append(abs(item["yaw"]))
        if not item["mesh"]:
            continue
        gt = item["vertices"].double()
        back = denormalise_vertices(item["target"], item["matrix"], input_size)
        err = (back[:, :2] - gt[:, :2]).norm(dim=1).max().item()
        dz = (back[:, 2] - back[:, 2].mean()) - (gt[:, 2] - gt[:, 2].mean())
        round_trip.append(max(err, dz.abs().max().item()))
        raw = formats.pt3d_68(formats.read_mat(items[i][2]), items[i][2]) if name != "300wlp" else None
        if raw is not None:
            d = raw[:, :2] - gt[topology.landmark_ids, :2].numpy()
            offsets.append([*d.mean(0), np.linalg.norm(d, axis=1).mean()])
    if not yaws:
        raise SystemExit(f"dataset check failed: no readable image among {len(items)} in {name}")
    yaws = np.asarray(yaws)
    report = {"dataset": name, "count": len(items), "official_count": formats.OFFICIAL_COUNTS[name],
              "unreadable_images": len(unreadable), "vertices": topology.n_vertices,
              "topology": str(topology.source), "bfm": bfm is not None,
              "abs_yaw_deg": _stats(yaws), "yaw_bins": yaw_bin_counts(yaws),
              "landmark_box_side_px": _stats(sides), "meshes": len(round_trip),
              "round_trip_max_px": float(max(round_trip)) if round_trip else None}
    if offsets:
        report["pt3d_68_offset_px"], report["pt3d_68_offset_px_if_one_based"] = pt3d_offset_report(offsets)
        o, b = report["pt3d_68_offset_px"], report["pt3d_68_offset_px_if_one_based"]
        print(f"pt3d_68 - mesh landmark vertices over {o['images']} files: mean offset dx {o['dx']:+.4f}, "
              f"dy {o['dy']:+.4f} px (norm {o['norm']:.4f}, mean point distance {o['mean_point_distance']:.3f}); "
              f"if pt3d_68 were 1-based: dx {b['dx']:+.4f}, dy {b['dy']:+.4f} (norm {b['norm']:.4f})")
    if name == "aflw2000":
        found = formats.find_pose_file(pose_file, root)
        report["pose_file"] = str(found) if found else None
        if found:
            report["yaw_bins_pose_file"] = yaw_bin_counts(formats.read_pose_file(found, len(items)))
        else:
            print(f"no 3DDFA pose file {pose_file!r} under {root}: evaluation would bin by Pose_Para", file=sys.stderr)
    if name == "florence":
        subjects = sorted({formats.subject_of(k) for k, _, _ in items})
        report["subjects"] = len(subjects)
        report["scan_vertices"] = {s: len(formats.read_obj_vertices(formats.scan_path(root, s))) for s in subjects}
    report["grid"] = os.path.join(out, f"check_{name}.png")
    draw_grid(ds, report["grid"], n=n_grid)
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
    parser.add_argument("--pose-file", default=formats.POSE_FILE,
                        help="AFLW2000-3D: 3DDFA pose file whose yaw bins are reported too; relative to --root")
    args = parser.parse_args(argv)
    try:
        report = check(args.dataset, args.root, args.topology, out=args.out, input_size=args.input_size,
                       box_scale=args.box_scale, n_grid=args.n_grid, pose_file=args.pose_file)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"dataset check failed: {e}")
    print(json.dumps(report, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
