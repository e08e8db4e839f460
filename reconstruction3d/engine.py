"""Mesh regression's loss and evaluation (paper §5.5, Table 9, App. D.2 Fig. 6), shared by train, eval.

Training runs in ``common.engine``. Loss: l1 distance between predicted and ground-truth vertices (§5.5), in
the normalised crop frame of ``reconstruction3d.data``. Evaluation maps predictions back to the image frame and scores:

- AFLW2000-3D "NME (68 points)" (Table 9): 2-D error of the 68 landmark vertices against
  ``pt3d_68``, normalised by sqrt(w h) of the GT landmark box, per |yaw| bin and the mean of the
  three bin means (``common.metrics.nme_aflw2000``; anchors_landmarks_3d.md §4.3). In %. The |yaw|
  comes from ``eval.yaw_source``: ``pose_file`` (3DDFA's ``AFLW2000-3D-new.pose.npy``, the split of
  the published 3DDFA numbers, 1306 / 462 / 232; cleardusk/3DDFA ``benchmark_aflw2000.py``) or
  ``pose_para`` (each ``.mat``'s Pose_Para, identical to 3DDFA's ``AFLW2000-3D.pose.npy``, 1312 / 383
  / 305); a missing pose file falls back to Pose_Para with a warning. metrics.json records the
  source and the images per bin.
- dense vertex NME (anchors §4.4, 2DASL): mean 3-D vertex distance over all vertices, depth of
  both meshes centred on their mean (the offset is unobservable), normalised by sqrt(w h) of the
  GT mesh's 2-D box; ``dense_nme`` as predicted and ``dense_nme_rigid`` after the best rotation
  and translation (Procrustes with the known correspondence; 2DASL uses ICP on every 50th vertex).
- Florence (Fig. 6): ``reconstruction3d.rigid.florence_error`` per image, a cumulative error curve
  (``draw_ced`` / ``plot_ced``, also used by fig6.py).
Predictions are gathered across ranks by sample index (padded duplicates count once).
"""
import numpy as np
import torch
from torch.utils.data import default_collate

from common.engine import make_loader
from common.finetune import gather_by_index
from common.logger import log, progress
from common.metrics import ced, nme_aflw2000
from reconstruction3d import formats, rigid
from reconstruction3d.data import MeshDataset, denormalise_vertices, yaw_bin_counts

YAW_SOURCES = ("pose_file", "pose_para")


def l1_loss(pred, target, valid):
    """Mean absolute vertex error per sample, averaged over the valid samples of the batch."""
    per_sample = (pred.float() - target).abs().mean(dim=(1, 2))             # B
    valid = valid.to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


@torch.no_grad()
def predict(model, images, matrix, *, input_size, amp=False):
    """Image-frame vertices (B, V, 3) float64 on the CPU for a batch of crops."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        pred = model(images)
    return denormalise_vertices(pred.float().cpu(), matrix, input_size)


def dense_errors(pred, gt):
    """(B, 2): dense NME as predicted and after rigid Procrustes; pred, gt (B, V, 3) float64."""
    gt = gt.clone()
    pred = pred.clone()
    gt[..., 2] -= gt[..., 2].mean(-1, keepdim=True)
    pred[..., 2] -= pred[..., 2].mean(-1, keepdim=True)
    wh = gt[..., :2].amax(1) - gt[..., :2].amin(1)
    norm = (wh[:, 0] * wh[:, 1]).sqrt()
    raw = (pred - gt).norm(dim=-1).mean(-1) / norm
    a, b = pred - pred.mean(1, keepdim=True), gt - gt.mean(1, keepdim=True)
    u, _, vh = torch.linalg.svd(b.transpose(1, 2) @ a)                      # B x 3 x 3
    d = torch.ones(len(a), 3, dtype=a.dtype)
    d[:, 2] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    rot = u @ torch.diag_embed(d) @ vh
    aligned = a @ rot.transpose(1, 2)
    rigid_err = (aligned - b).norm(dim=-1).mean(-1) / norm
    return torch.stack([raw, rigid_err], 1)


def aflw2000_yaws(root, count, *, source, pose_file):
    """(|yaw| degrees (count,) in sorted image order, or None for Pose_Para; {yaw_source, pose_file}) of the
    ``eval.yaw_source`` / ``eval.pose_file`` settings (module docstring); warns when falling back."""
    if source not in YAW_SOURCES:
        raise ValueError(f"eval.yaw_source must be one of {YAW_SOURCES}, got {source!r}")
    if source == "pose_para":
        return None, {"yaw_source": "pose_para", "pose_file": None}
    found = formats.find_pose_file(pose_file, root)
    if found is None:
        log(f"WARNING: AFLW2000-3D pose file {pose_file!r} not found under {root}; the yaw bins come from "
            f"Pose_Para instead (they differ from 3DDFA's published split: see reconstruction3d/README.md)")
        return None, {"yaw_source": "pose_para", "yaw_source_requested": "pose_file", "pose_file": None}
    return formats.read_pose_file(found, count), {"yaw_source": "pose_file", "pose_file": str(found)}


def evaluate_aflw2000(model, loader, *, device, input_size, landmark_ids, amp=False, yaws=None, yaw_info=None):
    """(metrics dict, per-image NME (N,)) on an AFLW2000-3D loader of ``MeshDataset(with_gt=True)``; the
    |yaw| bins come from ``yaws`` (one per dataset item, e.g. ``aflw2000_yaws``) or else Pose_Para."""
    model.eval()
    ids = torch.as_tensor(landmark_ids, dtype=torch.long)
    rows = {k: [] for k in ("index", "pred", "gt", "yaw", "dense", "valid")}
    for batch in progress(loader, desc="eval aflw2000"):
        pred = predict(model, batch["image"].to(device), batch["matrix"], input_size=input_size, amp=amp)
        rows["index"].append(batch["index"])
        rows["pred"].append(pred[:, ids])
        rows["gt"].append(batch["landmarks"])
        rows["yaw"].append(batch["yaw"].double())
        rows["dense"].append(dense_errors(pred, batch["vertices"].double()))
        rows["valid"].append(batch["valid"].to(torch.uint8))
    cat = {k: torch.cat(v).to(device) for k, v in rows.items()}
    index, (pred, gt, yaw, dense, valid) = gather_by_index(cat["index"], cat["pred"], cat["gt"], cat["yaw"],
                                                          cat["dense"], cat["valid"])
    if len(index) != len(loader.dataset):
        raise RuntimeError(f"evaluated {len(index)} of {len(loader.dataset)} samples")
    valid = valid.astype(bool)
    if not valid.any():
        raise RuntimeError("no readable AFLW2000-3D image")
    if yaws is not None:
        yaw = np.asarray(yaws, dtype=np.float64)[index]
    yaw_info = dict(yaw_info or {"yaw_source": "pose_file" if yaws is not None else "pose_para"})
    yaw_info["yaw_bins"] = yaw_bin_counts(yaw[valid])
    log(f"AFLW2000-3D yaw bins from {yaw_info['yaw_source']}: {yaw_info['yaw_bins']}")
    nme = nme_aflw2000(pred[valid], gt[valid], yaw[valid])
    per_image = np.linalg.norm(pred[valid, :, :2] - gt[valid, :, :2], axis=-1).mean(-1)
    wh = np.ptp(gt[valid, :, :2], axis=1)
    per_image = per_image / np.sqrt(wh[:, 0] * wh[:, 1])
    metrics = {"nme68": {k: 100 * v for k, v in nme.items()},
               "dense_nme": 100 * float(dense[valid, 0].mean()),
               "dense_nme_rigid": 100 * float(dense[valid, 1].mean()),
               "images": int(valid.sum()), "skipped_images": int((~valid).sum()), **yaw_info}
    return metrics, per_image


def evaluate_florence(model, loader, *, device, input_size, root, topology, alignment, norm,
                      ced_max, amp=False):
    """(metrics dict, per-image errors (N,)) on a Florence loader (``MeshDataset(with_gt=False)``).

    Predictions are made right-handed (image y down -> up) before aligning them to the scans.
    """
    model.eval()
    dataset = loader.dataset
    scans = {}
    index, errors, valid = [], [], []
    flip = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    if alignment == "auto":  # procrustes when the scans share the mesh topology (the synthetic set)
        first = formats.read_obj_vertices(formats.scan_path(root, formats.subject_of(dataset.items[0][0])))
        alignment = "procrustes" if len(first) == topology.n_vertices else "icp"
    for batch in progress(loader, desc="eval florence"):
        pred = predict(model, batch["image"].to(device), batch["matrix"], input_size=input_size, amp=amp) * flip
        for i, p, ok in zip(batch["index"].tolist(), pred.numpy(), batch["valid"].tolist()):
            subject = formats.subject_of(dataset.items[i][0])
            if subject not in scans:
                scans[subject] = formats.read_obj_vertices(formats.scan_path(root, subject))
            err = rigid.florence_error(p, scans[subject], landmark_ids=topology.landmark_ids,
                                       template=topology.vertices, alignment=alignment, norm=norm) if ok else 0.0
            index.append(i)
            errors.append(err)
            valid.append(ok)
    order, (errors, valid) = gather_by_index(torch.tensor(index, device=device),
                                            torch.tensor(errors, dtype=torch.float64, device=device),
                                            torch.tensor(valid, dtype=torch.uint8, device=device))
    if len(order) != len(dataset):
        raise RuntimeError(f"evaluated {len(order)} of {len(dataset)} samples")
    errors = errors[valid.astype(bool)]
    if not len(errors):
        raise RuntimeError("no readable Florence render")
    xs = np.linspace(0.0, ced_max, 201)
    curve = ced(errors, xs)
    auc = float(np.trapezoid(curve, xs) / ced_max)
    metrics = {"nme": 100 * float(errors.mean()), "median": 100 * float(np.median(errors)),
               f"auc@{ced_max:g}": auc, "alignment": alignment, "normaliser": norm,
               "images": int(len(errors)), "skipped_images": int((~valid.astype(bool)).sum()),
               "errors": errors.tolist()}
    return metrics, errors


def eval_loader(items, topology, bfm, *, input_size, box_scale, batch_size, workers, with_gt, pt3d_one_based=False,
                mesh_optional=False):
    """Loader over this rank's share of ``items`` in index order; unreadable images stay in with valid=False."""
    dataset = MeshDataset(items, topology, bfm, input_size=input_size, box_scale=box_scale, with_gt=with_gt,
                          pt3d_one_based=pt3d_one_based, mesh_optional=mesh_optional)
    return make_loader(dataset, batch_size=batch_size, train=False, workers=workers, seed=0,
                       collate_fn=default_collate)


def evaluate_all(model, names, *, root, topology, bfm, cfg, device, amp):
    """{dataset: metrics} on the test sets ``names`` (aflw2000 | florence); the AFLW2000-3D yaw source and the
    pt3d_68 convention come from ``cfg`` (eval.yaw_source, eval.pose_file, data.pt3d_one_based)."""
    results = {}
    for name in names:
        if name not in ("aflw2000", "florence"):
            raise ValueError(f"unknown test set {name!r}; expected aflw2000 or florence")
        items = formats.list_samples(name, root)
        loader = eval_loader(items, topology, bfm, input_size=cfg.data.input_size, box_scale=cfg.data.box_scale,
                             batch_size=cfg.eval.batch_size, workers=cfg.data.num_workers,
                             with_gt=name == "aflw2000", mesh_optional=name == "florence",
                             pt3d_one_based=name == "aflw2000" and cfg.data.get("pt3d_one_based", False))
        if name == "aflw2000":
            yaws, yaw_info = aflw2000_yaws(root, len(items), source=cfg.eval.get("yaw_source", "pose_file"),
                                           pose_file=cfg.eval.get("pose_file", formats.POSE_FILE))
            results[name], _ = evaluate_aflw2000(model, loader, device=device, input_size=cfg.data.input_size,
                                                 landmark_ids=topology.landmark_ids, amp=amp, yaws=yaws,
                                                 yaw_info=yaw_info)
            results[name]["pt3d_one_based"] = loader.dataset.pt3d_one_based
        elif name == "florence":
            results[name], _ = evaluate_florence(
                model, loader, device=device, input_size=cfg.data.input_size, root=root, topology=topology,
                alignment=cfg.eval.florence_alignment, norm=cfg.eval.florence_norm, ced_max=cfg.eval.ced_max,
                amp=amp)
    return results


def draw_ced(ax, curves, *, title, max_error):
    """Cumulative error curves {label: per-image errors} on ``ax`` up to ``max_error`` (x in %)."""
    xs = np.linspace(0.0, max_error, 501)
    for label, errors in curves.items():
        ax.plot(xs * 100, ced(errors, xs), lw=2, label=label)
    ax.set(xlabel="NME (%)", ylabel="fraction of images", title=title, xlim=(0, max_error * 100), ylim=(0, 1))
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=7, loc="lower right")


def plot_ced(curves, path, *, title, max_error):
    """One-panel PNG of ``draw_ced``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    draw_ced(ax, curves, title=title, max_error=max_error)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
