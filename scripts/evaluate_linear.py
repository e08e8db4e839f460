"""The linear protocol of the backbone evaluation harness (issue 20; paper §3.3 "linear", §5, App. A.3) at
feature-cache speed: closed-form ridge heads on frozen features, one ``Bench`` per (task, dataset).

Each bench reads its dataset with the task's own code and config (``TASK/configs/<dataset>.yaml``, or
``synthetic.yaml`` for the synthetic benchmark) and scores with the task's own metric code:
- ``au/disfa`` (fold 0 of the frl folds), ``au/bp4d`` (train -> devel): ridge from pooled features to the AU
  intensities; ICC(3,1) averaged over AUs on the test split (``au_intensity.engine.au_metrics``); floor 0.
- ``emotion/affectnet`` (train -> val): ridge one-vs-all classifier -> accuracy (floor: the training
  majority class); ridge -> valence / arousal, CCC (``emotion.engine.emotion_metrics``; floor 0).
- ``recognition/ijbb``, ``recognition/ijbc``: no training; the pooled features are the embedding, scored by the
  IJB 1:1 protocol (``face_recognition.ijb``: flip sum, faceness weight, template pooling); TAR@FAR=1e-4
  (floor: the FAR, what random scores reach). The same cell for every fraction.
- ``landmarks/300w`` (train -> private, else full), ``landmarks/wflw`` (train -> test), ``landmarks/aflw19``
  (train -> full): ridge on spatial features (layer3 + layer4 pooled to 2x2) to the points in the crop frame,
  mapped back to the image, the dataset's NME (%) (inter-ocular; AFLW-19 NME_diag of the AFLWinfo box;
  ``landmarks.scores``); penalty validation grouped by source image; floor: the training mean shape. This ridge
  is not the paper's linear protocol for landmarks; scripts/evaluate.py also trains that one (frozen backbone,
  the §5.2 heatmap head, ``landmarks.train model.adaptation=linear``) and reports it as ``<metric>_head``.
- ``3d/aflw2000`` (300W-LP -> AFLW2000-3D): ridge on the same spatial features to the mesh's 68 landmark
  vertices in the normalised crop frame (``reconstruction3d.data``), mapped back to the image, NME (68 points,
  %, mean of the three |yaw| bins; ``common.metrics.landmarks.nme_aflw2000`` with the config's yaw source);
  validation groups are 300W-LP source faces; floor: the training mean shape. NOT the paper's mesh-decoder
  protocol (Table 9 trains a spiral decoder on the backbone).
The penalty of every ridge is chosen on a held-out 20 % of the cell's TRAINING rows (by subject for AU),
never on the test split, then the ridge is refitted on all training rows. A fraction f < 1 keeps
``common.subsample.subset_keys(train keys, f, seed)`` (App. A.3).
"""
import os

import numpy as np
import torch

from common.config import load_config
from common.metrics import lower_is_better
from common.synthetic.writers.au import TRUTH_BOXES
from pretrain.probes import _ALPHAS as ALPHAS, DualRidge

HOLDOUT = 0.2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Ridge(DualRidge):
    """pretrain.probes.DualRidge (dual solution, N <= D) with ``predict_path``: predictions for many penalties
    from one kernel between the new and the fit rows."""

    def predict_path(self, y, x_new, alphas) -> list:
        """[predictions at ``x_new`` of the ridge fitted to ``y`` (N x T) with penalty a x scale, a in alphas]."""
        y_mean = y.mean(0)
        k = ((x_new - self.mu) / self.sd) @ self.x.T
        proj = self.evecs.T @ (y - y_mean)
        return [k @ (self.evecs @ (proj / (self.evals + a * self.scale)[:, None])) + y_mean for a in alphas]


class PrimalRidge(Ridge):
    """The same ridge solved in the primal (features < samples: a D x D eigendecomposition); same
    standardisation, intercept and penalty scale (mean kernel diagonal), so both give the same predictions."""

    def __init__(self, x):  # noqa: the dual's __init__ would eigendecompose the N x N kernel
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        self.x = (x - self.mu) / self.sd
        evals, self.evecs = np.linalg.eigh(self.x.T @ self.x)
        self.evals = np.clip(evals, 0, None)
        self.scale = self.evals.sum() / len(x)

    def predict_path(self, y, x_new, alphas) -> list:
        y_mean = y.mean(0)
        z = ((x_new - self.mu) / self.sd) @ self.evecs
        proj = self.evecs.T @ (self.x.T @ (y - y_mean))
        return [z @ (proj / (self.evals + a * self.scale)[:, None]) + y_mean for a in alphas]

    def predict(self, y, x_new, alpha):
        return self.predict_path(y, x_new, [alpha])[0]


def make_ridge(x):
    """The cheaper of the dual (N <= D) and primal ridge of features ``x`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return Ridge(x) if len(x) <= x.shape[1] else PrimalRidge(x)


def holdout(groups, seed) -> np.ndarray:
    """Boolean validation mask: 20 % of the groups (at least one), or of the rows when there are < 5 groups."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    if len(unique) < 5:
        unique, groups = np.arange(len(groups)), np.arange(len(groups))
    n_val = min(max(1, int(round(HOLDOUT * len(unique)))), len(unique) - 1)
    return np.isin(groups, rng.permutation(unique)[:n_val])


def _safe(score, pred, rows) -> float:
    """``score(pred, rows)``, NaN where the metric is undefined (e.g. ICC of a constant)."""
    try:
        return float(score(pred, rows))
    except (ValueError, TypeError):
        return float("nan")


def ridge_fit_predict(x, y, x_test, *, groups, score, metric, seed):
    """(test predictions, chosen penalty): penalty chosen on a held-out part of the training rows by
    ``score(pred, val_rows)`` (``metric`` names its direction), then refitted on every training row."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    alpha, val = 1.0, holdout(groups, seed)
    if min(val.sum(), (~val).sum()) >= 2:   # else too few rows to choose: the grid's middle penalty
        preds = make_ridge(x[~val]).predict_path(y[~val], np.asarray(x[val], np.float64), ALPHAS)
        scores = np.array([_safe(score, p, np.flatnonzero(val)) for p in preds])
        if np.isfinite(scores).any():
            alpha = ALPHAS[int(np.nanargmin(scores) if lower_is_better(metric) else np.nanargmax(scores))]
    return make_ridge(x).predict_path(y, np.asarray(x_test, np.float64), [alpha])[0], float(alpha)


class Bench:
    """One (task, dataset): ``splits`` {split: (torch Dataset, sample keys)} to extract, and ``score``;
    ``trainer`` {"task", "config", "overrides"}: the task's trainer on the same data (the fine-tune protocol)."""
    task, dataset, folder, metrics, spatial, flip_sum, per_fraction = "", "", "", (), False, False, True
    # ``folder``: the bench's folder under --data, set by scripts/evaluate.load_benches from BENCHES

    @property
    def name(self):
        return f"{self.task}/{self.dataset}"

    def task_config(self, task, name, synthetic, root, extra=()):
        """The task's own config (synthetic.yaml on the synthetic benchmark) with data.root and ``extra`` set;
        remembered as ``trainer``."""
        path = os.path.join(ROOT, task, "configs", "synthetic.yaml" if synthetic else f"{name}.yaml")
        self.trainer = {"task": task, "config": path, "overrides": [f"data.root={root}", *extra]}
        return load_config(path, self.trainer["overrides"])


class AUBench(Bench):
    """AU intensity, DISFA fold 0 or BP4D: ridge -> intensities, ICC (paper §5.3, Table 7 linear)."""
    task, metrics = "au", ("icc_mean",)

    def __init__(self, dataset, root, synthetic):
        from au_intensity.data import LAYOUT_KEYS, split_dataset
        self.dataset = dataset
        extra = [f"data.dataset={dataset}"]
        if synthetic and dataset == "bp4d":  # its default layout; the face fills part of the frame: crop the
            # writer's true boxes (au_intensity.boxes' crops score as they do at the same framing, au_intensity/README)
            extra += [f"data.boxes={TRUTH_BOXES}", "data.frames_dir=", "data.frame_name="]
        cfg = self.task_config("au_intensity", dataset, synthetic, root, extra)
        data = {k: cfg.data[k] for k in LAYOUT_KEYS}
        self.clip = tuple(cfg.eval.clip)
        self.preprocessing = {k: data[k] for k in ("fold", "fold_scheme", "boxes", "input_size", "box_scale")}
        train, test = (split_dataset(s, **data, train=False) for s in ("train", cfg.data.test_split))
        self.splits = {"train": (train, train.index.keys), "test": (test, test.index.keys)}

    def score(self, feats, rows, seed):
        from au_intensity.engine import au_metrics
        train, test = self.splits["train"][0].index, self.splits["test"][0].index
        tr, te = rows, np.flatnonzero(feats["test"]["seen"])
        x, y = feats["train"]["pooled"][tr], train.labels[tr]
        groups = [train.keys[i].split("/")[0] for i in tr]
        pred, alpha = ridge_fit_predict(
            x, y, feats["test"]["pooled"][te], groups=groups, metric="icc_mean", seed=seed,
            score=lambda p, v: au_metrics(p, y[v], train.aus, self.clip)["icc_mean"])
        metrics = au_metrics(pred, test.labels[te], test.aus, self.clip)
        return {"icc_mean": metrics["icc_mean"], "alpha": alpha, "n_test": int(len(te))}, {"icc_mean": 0.0}


class EmotionBench(Bench):
    """AffectNet: ridge one-vs-all classes -> accuracy; ridge -> valence / arousal, CCC (paper App. D.1)."""
    task, dataset, metrics = "emotion", "affectnet", ("accuracy", "valence_ccc", "arousal_ccc")

    def __init__(self, root, synthetic):
        from emotion.data import build_dataset, load_split
        cfg = self.task_config("emotion", "affectnet", synthetic, root)
        d = cfg.data
        self.preprocessing = {"input_size": d.input_size, "box_scale": d.box_scale, "num_classes": d.num_classes}
        self.tables = {s: load_split(root, split, d.num_classes) for s, split in (("train", "train"),
                                                                                  ("test", d.test_split))}
        self.splits = {s: (build_dataset(t, train=False, input_size=d.input_size, box_scale=d.box_scale, augment={}),
                           t["keys"]) for s, t in self.tables.items()}

    def score(self, feats, rows, seed):
        from common.metrics import accuracy, ccc
        from emotion.engine import emotion_metrics
        train, test = self.tables["train"], self.tables["test"]
        x, x_test = feats["train"]["pooled"], feats["test"]["pooled"]
        te = np.flatnonzero(feats["test"]["seen"])
        onehot = np.eye(test["num_classes"])[train["expression"]]
        logits, a_cls = ridge_fit_predict(
            x[rows], onehot[rows], x_test, groups=rows, metric="accuracy", seed=seed,
            score=lambda p, v: accuracy(p, train["expression"][rows][v]))
        va_rows = rows[train["va_valid"][rows]]
        va = np.stack([train["valence"], train["arousal"]], 1).astype(np.float64)
        va_pred, a_va = ridge_fit_predict(
            x[va_rows], va[va_rows], x_test, groups=va_rows, metric="ccc", seed=seed,
            score=lambda p, v: float(np.mean([ccc(np.clip(p[:, j], -1, 1), va[va_rows][v, j]) for j in (0, 1)])))
        m = emotion_metrics(logits, va_pred[:, 0], va_pred[:, 1], test, te)
        majority = np.bincount(train["expression"][rows], minlength=test["num_classes"]).argmax()
        floor = {"accuracy": round(float((test["expression"][te] == majority).mean()), 4),
                 "valence_ccc": 0.0, "arousal_ccc": 0.0}
        return {"accuracy": m["accuracy"], "valence_ccc": (m["valence"] or {}).get("ccc"),
                "arousal_ccc": (m["arousal"] or {}).get("ccc"), "alpha": [a_cls, a_va], "n_test": int(len(te))}, floor


class RecognitionBench(Bench):
    """IJB-B / IJB-C 1:1: pooled features as the embedding, no training; TAR@FAR=1e-4 (paper §5.1, Table 4)."""
    task, metrics, flip_sum, per_fraction = "recognition", ("tar@1e-4",), True, False

    def __init__(self, dataset, root, synthetic):
        from face_recognition.ijb import ijb_dataset, read_ijb_meta
        self.dataset = dataset
        data = os.path.dirname(root)   # one fine-tuning run (run_name) is evaluated on every IJB set in DATA
        present = [b for b in ("ijbb", "ijbc") if os.path.isdir(os.path.join(data, b.upper()))]
        cfg = self.task_config("face_recognition", "vggface2", synthetic, data,
                               [f"eval.benchmarks=[{','.join(present)}]"])
        self.run_name = "recognition_vggface2"
        self.train_data = os.path.join(data, cfg.data.vggface2)                  # the fine-tune protocol's
        d = cfg.data
        self.preprocessing = {"size": d.size, "mean": list(d.mean), "std": list(d.std), "flip_sum": True}
        self.meta = read_ijb_meta(root, dataset)
        self.splits = {"test": (ijb_dataset(self.meta, size=d.size, mean=d.mean, std=d.std),
                                [str(f) for f in self.meta["files"]])}

    def score(self, feats, rows, seed):
        from face_recognition.ijb import pool_templates, score_pairs, verification_metrics
        meta = self.meta
        f = feats["test"]["pooled"].astype(np.float32) * feats["test"]["seen"][:, None] * meta["faceness"][:, None]
        tids, templates = pool_templates(f, meta["templates"], meta["medias"])
        m = verification_metrics(score_pairs(tids, templates, meta["pairs"][:, 0], meta["pairs"][:, 1]), meta["labels"])
        return ({"tar@1e-4": round(m["tar_at_far"]["0.0001"], 4), "auc": round(m["auc"], 4),
                 "n_test": int(len(meta["labels"]))}, {"tar@1e-4": 1e-4})


class LandmarksBench(Bench):
    """300W / WFLW / AFLW-19: ridge on spatial features -> crop-frame points, the dataset's NME (%) (not the paper's
    heatmap head; paper §5.2, Table 6's test sets: 300W private 600 (else full), WFLW test, AFLW full NME_diag)."""
    task, spatial = "landmarks", True
    TEST_SPLITS = {"300w": ("private", "full"), "wflw": ("test",), "aflw19": ("full",)}

    def __init__(self, dataset, root, synthetic):
        from landmarks import formats, scores
        from landmarks.data import LandmarkDataset
        self.dataset = dataset
        self.metric = scores.PRIMARY[dataset]
        self.metrics = (self.metric,)
        extra = [f"data.dataset={dataset}"] + ([f"data.test_splits=[{self.TEST_SPLITS[dataset][0]}]"]
                                               if dataset != "300w" else [])
        cfg = self.task_config("landmarks", dataset, synthetic, root, extra)
        d = cfg.data
        self.input_size, self.box_scale = d.input_size, d.box_scale
        self.preprocessing = {"input_size": d.input_size, "box_scale": d.box_scale, "box": d.box}
        train = formats.load_split(dataset, root, "train", d.box)
        for split in self.TEST_SPLITS[dataset]:
            try:
                test = formats.load_split(dataset, root, split, d.box)
                break
            except (FileNotFoundError, formats.DatasetFormatError):
                if split == self.TEST_SPLITS[dataset][-1]:
                    raise
        self.test_split = test.split
        self.samples = {"train": train, "test": test}
        self.splits = {s: (LandmarkDataset(v, input_size=d.input_size, box_scale=d.box_scale), v.keys)
                       for s, v in self.samples.items()}

    def score(self, feats, rows, seed):
        from common.transforms import apply_to_points, invert
        from landmarks import scores
        from scripts.sweep_tasks import _source_image
        crops = {s: ds.crops for s, (ds, _) in self.splits.items()}
        train, test = self.samples["train"], self.samples["test"]
        te = np.flatnonzero(feats["test"]["seen"])
        y = apply_to_points(crops["train"], torch.from_numpy(train.points)).numpy().reshape(len(train), -1)

        def nmes(pred, split, idx):
            samples = self.samples[split]
            back = apply_to_points(invert(crops[split][idx]), torch.from_numpy(pred.reshape(len(idx), -1, 2)))
            boxes = None if samples.dataset_boxes is None else samples.dataset_boxes[idx]
            return scores.per_image_nmes(self.dataset, back.numpy(), samples.points[idx], boxes)[self.metric]

        pred, alpha = ridge_fit_predict(
            feats["train"]["spatial"][rows], y[rows], feats["test"]["spatial"][te], metric=self.metric, seed=seed,
            groups=[_source_image(train.keys[i]) for i in rows],    # WFLW / AFLW: faces of one image together
            score=lambda p, v: float(nmes(p, "train", rows[v]).mean()))
        floor = scores.mean_shape_nme(self.dataset, train.select(rows), test.select(te), input_size=self.input_size,
                                      box_scale=self.box_scale)
        return ({self.metric: round(100 * float(nmes(pred, "test", te).mean()), 4), "alpha": alpha,
                 "n_test": int(len(te)), "test_split": self.test_split}, {self.metric: round(floor, 4)})


class _Landmarks3D(torch.utils.data.Dataset):
    """A ``reconstruction3d.data.MeshDataset`` whose items carry ``label``: the 68 landmark vertices in the crop
    frame (training) or the ground truth needed to score (test: image-frame landmarks, crop matrix, yaw)."""

    def __init__(self, meshes, test):
        self.meshes, self.test = meshes, test
        self.ids = torch.as_tensor(meshes.topology.landmark_ids, dtype=torch.long)

    def __len__(self):
        return len(self.meshes)

    def __getitem__(self, i):
        item = self.meshes[i]
        if not item["valid"]:
            return None                                       # skipped and counted (common.engine.collate_readable)
        if self.test:
            label = torch.cat([item["landmarks"].reshape(-1), item["matrix"].reshape(-1),
                               torch.tensor([item["yaw"]], dtype=torch.float64)])
        else:
            label = item["target"][self.ids].double().reshape(-1)
        return {"image": item["image"], "index": i, "label": label}


class Landmarks3DBench(Bench):
    """300W-LP -> AFLW2000-3D: ridge on spatial features -> 68 landmark vertices, NME (68 points) by |yaw| bin
    (paper §5.5, Table 9 metric; not its mesh-decoder head)."""
    task, dataset, metrics, spatial = "3d", "aflw2000", ("nme68",), True

    def __init__(self, root, synthetic):
        from reconstruction3d import formats
        from reconstruction3d.data import MeshDataset, load_topology
        from reconstruction3d.engine import aflw2000_yaws
        root = os.path.dirname(root)                          # data.root holds 300W_LP/, AFLW2000/ and the model
        cfg = self.task_config("reconstruction3d", "300wlp", synthetic, root, ["data.test_sets=[aflw2000]"])
        d = cfg.data
        self.input_size = d.input_size
        topology, bfm = load_topology(cfg.model.topology, root)
        self.preprocessing = {"input_size": d.input_size, "box_scale": d.box_scale, "landmarks": "mesh68",
                              "pt3d_one_based": bool(d.pt3d_one_based), "topology": str(cfg.model.topology)}
        self.items = {s: formats.list_samples(n, root) for s, n in (("train", "300wlp"), ("test", "aflw2000"))}
        self.splits = {s: (_Landmarks3D(MeshDataset(items, topology, bfm, input_size=d.input_size,
                                                    box_scale=d.box_scale, with_gt=s == "test",
                                                    pt3d_one_based=s == "test" and bool(d.pt3d_one_based)),
                                        test=s == "test"), [k for k, _, _ in items])
                       for s, items in self.items.items()}
        # |yaw| per test image from the config's source (None: each .mat's Pose_Para, carried in the labels)
        self.yaws, self.yaw_info = aflw2000_yaws(root, len(self.items["test"]),
                                                 source=cfg.eval.get("yaw_source", "pose_file"),
                                                 pose_file=cfg.eval.get("pose_file", formats.POSE_FILE))

    def score(self, feats, rows, seed):
        from common.metrics.landmarks import nme_aflw2000
        from reconstruction3d.data import denormalise_vertices
        from scripts.sweep_tasks import r3d_group
        keys = self.splits["train"][1]
        te = np.flatnonzero(feats["test"]["seen"])
        y, truth = feats["train"]["label"], feats["test"]["label"][te]
        gt, matrix = truth[:, :204].reshape(-1, 68, 3), truth[:, 204:213].reshape(-1, 3, 3)
        yaw = truth[:, 213] if self.yaws is None else np.asarray(self.yaws, dtype=np.float64)[te]

        def nme68(pred):
            image = denormalise_vertices(torch.from_numpy(pred.reshape(len(te), 68, 3)), matrix, self.input_size)
            return 100 * nme_aflw2000(image.numpy(), gt, yaw)["mean"]

        def crop_error(pred, v):                              # mean 2-D point error in the crop frame (validation)
            diff = (pred.reshape(len(v), 68, 3) - y[rows][v].reshape(len(v), 68, 3))[..., :2]
            return float(np.linalg.norm(diff, axis=-1).mean())

        pred, alpha = ridge_fit_predict(feats["train"]["spatial"][rows], y[rows], feats["test"]["spatial"][te],
                                        groups=[r3d_group(keys[i]) for i in rows], metric="nme", seed=seed,
                                        score=crop_error)
        floor = nme68(np.tile(y[rows].mean(0), (len(te), 1)))
        metrics = {"nme68": round(nme68(pred), 4), "alpha": alpha, "n_test": int(len(te)),
                   "yaw_source": self.yaw_info["yaw_source"]}
        return metrics, {"nme68": round(floor, 4)}


# task -> [(dataset, folder under --data, constructor(root, synthetic))]
BENCHES = {
    "au": [("disfa", "DISFA", lambda r, s: AUBench("disfa", r, s)),
           ("bp4d", "BP4D", lambda r, s: AUBench("bp4d", r, s))],
    "emotion": [("affectnet", "AffectNet", EmotionBench)],
    "recognition": [(d, d.upper(), lambda r, s, d=d: RecognitionBench(d, r, s)) for d in ("ijbb", "ijbc")],
    "landmarks": [(d, f, lambda r, s, d=d: LandmarksBench(d, r, s))
                  for d, f in (("300w", "300W"), ("wflw", "WFLW"), ("aflw19", "AFLW"))],
    "3d": [("aflw2000", "300W_LP", Landmarks3DBench)],
}
PRIMARY = {"au": "icc_mean", "emotion": "accuracy", "recognition": "tar@1e-4", "3d": "nme68"}  # the radar's axes


def primary(cell):
    """The radar metric of a cell id ``task/dataset[/fraction]`` (landmarks: the dataset's, ``landmarks.scores``)."""
    task, dataset = cell.split("/")[:2]
    if task == "landmarks":
        from landmarks.scores import PRIMARY as LANDMARKS_PRIMARY
        return LANDMARKS_PRIMARY[dataset]
    return PRIMARY[task]
