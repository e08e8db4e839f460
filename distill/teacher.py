"""The teacher of self-distillation (paper §3.5): online heatmap targets from the previous model.

Paper §3.5: "we use the fine-tuned network to generate in an online manner new labels for training
an identically sized student model", i.e. argmin_θt L(f(x, θ_{t-1}), f(x, θ_t)) with L the
pixel-wise l2 loss. The teacher runs in eval mode (BatchNorm running statistics) without gradients
on the very batch the student sees (same crop, same augmentation), so its heatmaps are the
targets that the student regresses with ``landmarks.engine.heatmap_loss`` (trained by ``common.engine``).
"""
import os

import torch

from common.backbone import Backbone
from common.checkpoint import load_checkpoint
from common.subsample import load_keys
from distill.data import labelled_mask
from landmarks.engine import gt_targets
from landmarks.heatmap_head import LandmarkModel
from landmarks.heatmaps import flip_heatmaps


def load_landmark_model(path):
    """(``LandmarkModel`` in eval mode, the checkpoint's config dict) from a landmarks.train or
    distill.train checkpoint; the architecture comes from the checkpoint's own config."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "head.out.weight" not in state.get("model", {}):
        raise ValueError(f"{path}: not a landmarks checkpoint (no model.head.out.weight)")
    config = state.get("config") or {}
    model_cfg = config.get("model") or {}
    n_points = state["model"]["head.out.weight"].shape[0]
    model = LandmarkModel(Backbone(model_cfg.get("arch", "resnet50")), n_points, model_cfg.get("head_width", 256))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        arch = model_cfg.get("arch", "resnet50")
        raise ValueError(f"{path}: weights do not match a {arch} landmark model: {e}") from e
    return model.eval(), config


def check_teacher(path, config, teacher_points, *, arch, input_size, n_points, labelled_keys, fraction):
    """The teacher must match the student (same size and crops: §3.5 "identically sized") and must
    have seen the same labels: the ``subset_keys.txt`` next to it if there is one, else its
    ``data.fraction``. Raises ValueError naming the mismatch."""
    model, data = config.get("model") or {}, config.get("data") or {}
    problems = []
    if model.get("arch", arch) != arch:
        problems.append(f"arch {model.get('arch')} vs the student's {arch}")
    if data.get("input_size", input_size) != input_size:
        problems.append(f"input_size {data.get('input_size')} vs {input_size}")
    if teacher_points != n_points:
        problems.append(f"{teacher_points} points vs {n_points}")
    subset = os.path.join(os.path.dirname(os.path.abspath(path)), "subset_keys.txt")
    if os.path.isfile(subset):
        if sorted(load_keys(subset)) != sorted(labelled_keys):
            problems.append(f"it was trained on the labelled subset {subset}, not on this run's")
    elif data.get("fraction", fraction) != fraction:
        problems.append(f"it was trained on data.fraction={data.get('fraction')}, this run labels {fraction}")
    if problems:
        raise ValueError(f"teacher {path}: " + "; ".join(problems))


def teacher_targets(teacher, *, input_size, heatmap_size, sigma, labelled="teacher", flip_perm=None, amp=False):
    """Target function of the distillation loss: the teacher's heatmaps of the batch.

    labelled: "teacher" (the paper's formula: teacher targets for every image) or "gt" (Gaussians
    on the ground truth for the labelled images of the batch). flip_perm: also average with the
    teacher's heatmaps of the mirrored image (FAN flip-test) when given.
    """
    if labelled not in ("teacher", "gt"):
        raise ValueError(f"distill.labelled_targets must be 'teacher' or 'gt', got {labelled!r}")
    gt = gt_targets(input_size=input_size, heatmap_size=heatmap_size, sigma=sigma)

    @torch.no_grad()
    def targets(batch, device):
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            heat = teacher(images).float()                                   # N x P x h x w
            if flip_perm is not None:
                heat = (heat + flip_heatmaps(teacher(images.flip(-1)).float(), flip_perm)) / 2
        if labelled == "gt":
            mask = labelled_mask(batch["points"]).to(device)
            heat = torch.where(mask[:, None, None, None], gt(batch, device), heat)
        return heat
    return targets
