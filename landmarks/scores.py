"""Per-dataset landmark error protocol (paper §5.2, Tables 5-6): which NME, AUC and FR each dataset reports.

Table 6 reports NME_inter-ocular for 300W, COFW and WFLW and NME_diag for AFLW (§5.2). Normalisers
(shared/research/anchors_landmarks_3d.md §2.1): inter-ocular = outer eye corners (68: 36/45,
98: 60/72, AFLW-19: 6/11); inter-pupil = eye centres; AFLW-19 NME_diag / NME_box = sqrt(w^2 + h^2)
/ sqrt(w h) of the AFLWinfo box (FaRL), with the GT-landmark-box variants reported under their own
names because the FAN line appears to use those (anchors §2.1 notes). COFW-68 "box" is the GT
landmark box (FAN line). AUC / FR follow FaRL's recipe (``common.metrics.auc_fr``, anchors §2.2).
Units: every ``nme_*`` and ``fr@*`` value is in %, every ``auc@*`` value in [0, 1].
"""
import numpy as np
import torch

from common.metrics import auc_fr, nme
from common.transforms import apply_to_points, crop_from_box, invert

PRIMARY = {"300w": "nme_io", "wflw": "nme_io", "cofw68": "nme_io", "aflw19": "nme_diag"}
THRESHOLDS = (0.08, 0.1)


def per_image_nmes(dataset, pred, gt, dataset_boxes=None):
    """{metric name: (N,) per-image NME as a fraction} for ``dataset``; pred, gt (N, P, 2)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if dataset == "aflw19":
        if dataset_boxes is None:
            raise ValueError("AFLW-19 NME_diag needs the AFLWinfo boxes (dataset_boxes)")
        return {"nme_diag": nme(pred, gt, "box_diag", box=dataset_boxes),
                "nme_box": nme(pred, gt, "box_size", box=dataset_boxes),
                "nme_diag_lmkbox": nme(pred, gt, "box_diag"),
                "nme_box_lmkbox": nme(pred, gt, "box_size"),
                "nme_io": nme(pred, gt, "interocular")}
    if dataset not in PRIMARY:
        raise ValueError(f"unknown landmark dataset {dataset!r}")
    out = {"nme_io": nme(pred, gt, "interocular"), "nme_ip": nme(pred, gt, "interpupil")}
    if dataset == "cofw68":
        out["nme_box"] = nme(pred, gt, "box_size")
    return out


def summarize(dataset, nmes):
    """Mean NMEs (%), AUC@0.08 / 0.1 and FR@0.08 / 0.1 of the dataset's primary NME; AFLW-19 also
    gets FaRL's AUC_box@0.07 / FR_box@0.07 on nme_box."""
    out = {name: 100.0 * float(np.mean(values)) for name, values in nmes.items()}
    primary = nmes[PRIMARY[dataset]]
    for t in THRESHOLDS:
        auc, fr = auc_fr(primary, threshold=t)
        out[f"auc@{t}"], out[f"fr@{t}"] = auc, 100.0 * fr
    if dataset == "aflw19":
        auc, fr = auc_fr(nmes["nme_box"], threshold=0.07)
        out["auc_box@0.07"], out["fr_box@0.07"] = auc, 100.0 * fr
    out["primary"] = PRIMARY[dataset]
    out["n"] = int(len(primary))
    return out


def mean_shape_nme(dataset, train, test, *, input_size, box_scale=1.25):
    """Mean NME (%) of the trivial floor: the training faces' mean shape in the crop frame, placed in each
    test face's box (what a network that ignores the pixels can reach)."""
    crops = crop_from_box(torch.from_numpy(train.boxes), input_size, box_scale)
    mean = apply_to_points(crops, torch.from_numpy(train.points)).mean(0)
    back = invert(crop_from_box(torch.from_numpy(test.boxes), input_size, box_scale))
    pred = apply_to_points(back, mean.expand(len(test), -1, -1)).numpy()
    return float(100 * per_image_nmes(dataset, pred, test.points, test.dataset_boxes)[PRIMARY[dataset]].mean())
