"""Per-task knowledge the hyper-parameter sweep needs (paper §3.3, Fig. 2): training keys, validation scoring.

The paper searches learning rate, schedule length and backbone-relative learning rate for every
(task, dataset, init, data fraction) and says nothing of how a configuration was picked. We pick on
a validation set drawn from the data point's own training data, never on a test set:

- landmarks, BP4D AU, AffectNet, 300W-LP: no task ships a validation split drawn from its training
  data (300W's "common", AFLW's "full", AffectNet's "validation", AFLW2000-3D are test sets), so the
  sweep carves one out of the training keys of the data point, by group (a video subject, a 300W-LP
  source image), trains on the rest through the task's own ``data.subset_file``, and scores the
  held-out keys here with the task's own evaluation code.
- DISFA: the paper group's folds hold out validation subjects (``au_intensity/labels.py``); those
  are scored instead (``data.val_split`` of the task names them).
- face recognition: IJB-B/C are its test sets, so the sweep holds out whole VGGFace2 training identities
  and scores 1:1 verification among their faces (TAR at FAR 1e-3 over every same / different-identity
  pair, at most 10 faces of 400 identities), the protocol of the test sets at a size that scores in seconds.
- WFLW holds several faces of one image; a validation split is grouped by source image
  (``_source_image``), so no image has faces on both sides.

    python scripts/sweep_val.py --task landmarks --config C --checkpoint RUN/last.pth --keys VAL.txt [key=value ...]
    python scripts/sweep_tasks.py TASK EPOCHS      # prints the default grid of a data point (scripts/common.sh)
"""
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Short grid names (paper §3.3: learning rate, scheduler duration, backbone relative learning rate).
ALIASES = {"lr": "optim.lr", "epochs": "optim.epochs", "backbone_lr_mult": "optim.backbone_lr_mult",
           "schedule": "optim.schedule", "weight_decay": "optim.weight_decay", "batch_size": "optim.batch_size"}


# The default grid of a data point (§3.3): lr around the paper's x schedule E/2, E, 2E x backbone-relative lr.
SEARCH_LRS = {"landmarks": "3e-5,1e-4,3e-4",           # App. A.2: 1e-4
              "au_intensity": "3e-5,1e-4,3e-4",        # App. A.2: 1e-4
              "emotion": "1e-5,1e-4,1e-3",             # the paper prints Adam at 0.1; the grid spans Adam's range
              "reconstruction3d": "0.01,0.05,0.1",     # App. A.2: SGD at 0.05
              "face_recognition": "0.05,0.1,0.2"}      # 8-GPU runs: one schedule length


def default_grid(task, epochs) -> str:
    """The ``--grid`` of a data point whose schedule is ``epochs`` long (E): lr x {E/2, E, 2E} x {0.1, 1}."""
    if task not in SEARCH_LRS:
        raise ValueError(f"no default grid for task {task!r}; expected one of {sorted(SEARCH_LRS)}")
    e = int(epochs)
    lengths = f"{e}" if task == "face_recognition" else f"{max(e // 2, 1)},{e},{2 * e}"
    return f"lr={SEARCH_LRS[task]},epochs={lengths},backbone_lr_mult=0.1,1"


def parse_grid(items):
    """``["lr=1e-4,3e-4,epochs=60", "x=1"]`` -> [("lr", ["1e-4", "3e-4"]), ("epochs", ["60"]), ("x", ["1"])]."""
    grid = []
    for token in (t for item in items for t in item.split(",") if t.strip()):
        if "=" in token:
            key, value = token.split("=", 1)
            if any(key.strip() == k for k, _ in grid):
                raise ValueError(f"--grid names {key!r} twice")
            grid.append((key.strip(), [value.strip()]))
        elif not grid:
            raise ValueError(f"--grid must start with key=value, got {token!r}")
        else:
            grid[-1][1].append(token.strip())
    if not grid:
        raise ValueError("--grid is empty")
    return grid


def without_axis(grid, name) -> str:
    """A ``--grid`` string without the axis ``name`` (short or dotted, e.g. backbone_lr_mult)."""
    kept = [(k, v) for k, v in parse_grid([grid]) if ALIASES.get(k, k) != ALIASES.get(name, name)]
    return ",".join(f"{k}={','.join(v)}" for k, v in kept)


def run_logged(cmd, log_path, env=None, cwd=None):
    """Run ``cmd`` (a training or validation run of a sweep, of scripts/evaluate.py or of the demo) in ``cwd``
    with ``env`` (default: this process's) and its output appended to ``log_path``, the repository importable
    from any folder; on failure raise with the log's tail."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-15:])
        raise SystemExit(f"command failed (exit {done.returncode}), log {log_path}:\n{tail}")


def _device():
    import torch  # here, not at the top: ``sweep.py --count`` runs once per table cell without torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rows(all_keys, keys):
    where = {k: i for i, k in enumerate(all_keys)}
    missing = [k for k in keys if k not in where]
    if missing:
        raise ValueError(f"{len(missing)} validation keys are not training samples, e.g. {missing[:3]}")
    return [where[k] for k in keys]


# ---------------------------------------------------------------- landmarks (§5.2)
def landmarks_keys(cfg):
    from landmarks import formats
    return formats.load_split(cfg.data.dataset, cfg.data.root, cfg.data.train_split, cfg.data.box).keys


def landmarks_score(cfg, checkpoint, keys=None, split=None):
    """Primary NME (%) of ``checkpoint`` on the held-out training faces ``keys`` (or a named split)."""
    from common.backbone import Backbone
    from common.checkpoint import load_checkpoint
    from landmarks import formats, scores
    from landmarks.engine import eval_loader, evaluate
    from landmarks.heatmap_head import LandmarkModel
    data = cfg.data
    samples = formats.load_split(data.dataset, data.root, split or data.train_split, data.box)
    if keys is not None:
        samples = samples.select(_rows(samples.keys, keys))
    state = load_checkpoint(checkpoint)
    trained = state["config"]["model"]
    model = LandmarkModel(Backbone(trained["arch"]), formats.N_POINTS[data.dataset], trained["head_width"])
    model.load_state_dict(state["model"], strict=True)
    device = _device()
    loader = eval_loader(samples, input_size=data.input_size, box_scale=data.box_scale, batch_size=32, workers=0)
    metrics, _, _ = evaluate(model.to(device), loader, samples, device=device, input_size=data.input_size,
                             decode=cfg.test.decode)
    return metrics[scores.PRIMARY[data.dataset]], scores.PRIMARY[data.dataset], True


def landmarks_test(metrics):
    return {f"{split}.{k}": v for split, m in metrics.get("splits", {}).items() for k, v in m.items()
            if k.startswith("nme_")}


# ---------------------------------------------------------------- AU intensity (§5.3)
def _au_layout(cfg):
    from au_intensity.data import LAYOUT_KEYS
    return {k: cfg.data[k] for k in LAYOUT_KEYS}


def au_keys(cfg):
    from au_intensity.data import load_split
    d = cfg.data
    return load_split(d.dataset, d.root, "train", fold=d.fold, fold_scheme=d.fold_scheme,
                      frames_dir=d.frames_dir or None, frame_name=d.frame_name or None).keys


def au_native(cfg):
    """DISFA's validation subjects (the frl folds have them; the jaa folds do not); BP4D has none."""
    from au_intensity.data import split_subjects
    if cfg.data.dataset != "disfa":
        return None
    return "val" if split_subjects("disfa", "val", fold=cfg.data.fold, fold_scheme=cfg.data.fold_scheme) else None


def au_score(cfg, checkpoint, keys=None, split=None):
    """Mean ICC(3,1) over AUs on the held-out frames ``keys`` (or the validation subjects ``split``)."""
    from au_intensity.data import build_dataset, load_split
    from au_intensity.engine import evaluate
    from au_intensity.model import AUIntensityNet
    from common.backbone import build_backbone
    from common.checkpoint import load_checkpoint
    from common.engine import make_loader
    d = cfg.data
    index = load_split(d.dataset, d.root, split or "train", fold=d.fold, fold_scheme=d.fold_scheme,
                       frames_dir=d.frames_dir or None, frame_name=d.frame_name or None)
    if keys is not None:
        index = index.select(_rows(index.keys, keys))
    dataset = build_dataset(index, train=False, boxes_file=d.boxes, input_size=d.input_size, box_scale=d.box_scale,
                            augment={})
    model = AUIntensityNet(build_backbone(cfg.model.arch, "scratch"), len(index.aus))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    device = _device()
    loader = make_loader(dataset, batch_size=cfg.eval.batch_size, train=False, workers=0, seed=0)
    metrics, _ = evaluate(model.to(device), loader, dataset.index, device=device, clip=tuple(cfg.eval.clip))
    return metrics["icc_mean"], "icc_mean", False


def au_test(metrics):
    return {"icc_mean": metrics.get("icc_mean"), "mae_mean": metrics.get("mae_mean")}


# ---------------------------------------------------------------- emotion (App. D.1)
def emotion_keys(cfg):
    from emotion.data import load_split
    return load_split(cfg.data.root, "train", cfg.data.num_classes)["keys"]


def emotion_score(cfg, checkpoint, keys=None, split=None):
    """Mean of valence and arousal CCC on the held-out training images (accuracy when none has V/A)."""
    from common.backbone import build_backbone
    from common.checkpoint import load_checkpoint
    from common.engine import make_loader
    from emotion.data import build_dataset, load_split, select
    from emotion.engine import evaluate
    from emotion.model import EmotionNet
    d = cfg.data
    table = load_split(d.root, split or "train", d.num_classes)
    if keys is not None:
        table = select(table, _rows(table["keys"], keys))
    dataset = build_dataset(table, train=False, input_size=d.input_size, box_scale=d.box_scale, augment={})
    model = EmotionNet(build_backbone(cfg.model.arch, "scratch"), d.num_classes)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    device = _device()
    loader = make_loader(dataset, batch_size=cfg.eval.batch_size, train=False, workers=0, seed=0)
    metrics, _ = evaluate(model.to(device), loader, dataset.table, device=device, flip_va=cfg.eval.flip_va)
    if metrics["valence"] is None:
        return metrics["accuracy"], "accuracy", False
    return (metrics["valence"]["ccc"] + metrics["arousal"]["ccc"]) / 2, "ccc_va_mean", False


def emotion_test(metrics):
    va = {f"{n}_{k}": (metrics.get(n) or {}).get(k) for n in ("valence", "arousal") for k in ("rmse", "ccc")}
    return {"accuracy": metrics.get("accuracy"), **va}


# ---------------------------------------------------------------- 3D reconstruction (§5.5)
def r3d_keys(cfg):
    from reconstruction3d import formats
    return [k for k, _, _ in formats.list_samples("300wlp", cfg.data.root)]


def r3d_group(key):
    """300W-LP renders one source face at many poses, mirrored in ``*_Flip``: group them by source
    (``AFW_Flip/AFW_123_1_7`` -> ``AFW/AFW_123_1``), so no view of a validation face is trained on."""
    folder, _, name = key.rpartition("/")
    return f"{folder.removesuffix('_Flip')}/{name.rsplit('_', 1)[0]}"


def r3d_score(cfg, checkpoint, keys=None, split=None):
    """Mean absolute vertex error (the training loss, on normalised crops) of the held-out 300W-LP faces."""
    import torch
    from torch.utils.data import DataLoader
    from reconstruction3d import formats
    from reconstruction3d.data import MeshDataset, load_topology
    from reconstruction3d.engine import l1_loss
    from reconstruction3d.eval import load_model
    from reconstruction3d.train import mesh_hierarchy
    if split is not None:
        raise ValueError("reconstruction3d has no named validation split")
    m, d = cfg.model, cfg.data
    topology, bfm = load_topology(m.topology, d.root)
    hierarchy = mesh_hierarchy(topology, factors=m.factors, lengths=m.spiral_length, dilations=m.dilation,
                               cache_dir=m.mesh_cache)
    items = formats.list_samples("300wlp", d.root)
    if keys is not None:
        items = [items[i] for i in _rows([k for k, _, _ in items], keys)]
    device = _device()
    model = load_model(checkpoint, arch=m.arch, channels=m.channels, hierarchy=hierarchy).to(device).eval()
    loader = DataLoader(MeshDataset(items, topology, bfm, input_size=d.input_size, box_scale=d.box_scale),
                        batch_size=cfg.eval.batch_size)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            valid = batch["valid"]
            n = int(valid.sum())
            if n:
                loss = l1_loss(model(batch["image"].to(device)), batch["target"].to(device), valid.to(device))
                total, count = total + float(loss) * n, count + n
    if not count:
        raise RuntimeError("no readable validation image")
    return total / count, "vertex_l1", True


def r3d_test(metrics):
    return {f"{name}.{k}": v for name in ("aflw2000",) for k, v in (metrics.get(name, {}).get("nme68") or {}).items()}


# ---------------------------------------------------------------- face recognition (§5.1)
def fr_keys(cfg):
    from face_recognition.data import load_vggface2
    from face_recognition.eval import benchmark_root
    return load_vggface2(benchmark_root(cfg.data.root, cfg.data.vggface2), cfg.data.split)["paths"].tolist()


def fr_score(cfg, checkpoint, keys=None, split=None, per_identity=10, identities=400, far=1e-3):
    """TAR at ``far`` of 1:1 verification among the held-out identities' faces (every pair of at most
    ``per_identity`` faces of the first ``identities`` identities, embedded with their flips as IJB is)."""
    import numpy as np
    from common.checkpoint import load_checkpoint
    from common.metrics import tar_at_far
    from face_recognition.data import AlignedFaces, load_vggface2
    from face_recognition.eval import benchmark_root
    from face_recognition.ijb import extract_features
    from face_recognition.model import embedder_from_state
    if split is not None or keys is None:
        raise ValueError("face_recognition is validated on held-out training identities (--keys), not a split")
    d, m = cfg.data, cfg.model
    root = benchmark_root(d.root, d.vggface2)
    index = load_vggface2(root, d.split)
    rows = np.asarray(_rows(index["paths"].tolist(), sorted(keys)))
    ids = index["identities"][rows]
    chosen = np.unique(ids)[:identities]
    rank = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])          # rows are sorted by identity
    within = np.arange(len(ids)) - np.repeat(rank, np.diff(np.append(rank, len(ids))))
    rows = rows[np.isin(ids, chosen) & (within < per_identity)]
    labels = np.unique(index["identities"][rows], return_inverse=True)[1]
    faces = AlignedFaces(index["paths"][rows], index["points"][rows], labels, size=d.size, mean=d.mean, std=d.std,
                         root=os.path.join(root, d.split))
    embedder = embedder_from_state(load_checkpoint(checkpoint), checkpoint, arch=m.arch,
                                   embedding_dim=m.embedding_dim, head=m.head).to(_device())
    feats, readable = extract_features(embedder, faces, batch_size=cfg.eval.batch_size, num_workers=0,
                                       device=_device())
    feats = feats[readable] / np.maximum(np.linalg.norm(feats[readable], axis=1, keepdims=True), 1e-12)
    labels = labels[readable]
    i, j = np.triu_indices(len(feats), k=1)
    scores = np.einsum("nd,nd->n", feats[i], feats[j])
    return float(tar_at_far(scores, labels[i] == labels[j], (far,))[far]), f"tar_at_far_{far:g}", False


def fr_test(metrics):
    return {f"{b}.tar@{far}": v for b in ("ijbb", "ijbc") for far, v in (metrics.get(b) or {}).get("tar_at_far",
                                                                                                    {}).items()}


def _whole_key(key):
    return key


def _source_image(key):
    """A landmark key's image: WFLW keys are ``image@cx_cy`` and AFLW's ``image#i`` (several faces per image)."""
    return key.split("@", 1)[0].split("#", 1)[0]


def _subject(key):
    """A video subject (AU keys) or a VGGFace2 identity (``n000002/0001_01.jpg``): the part before the first /."""
    return key.split("/", 1)[0]


# task -> what the sweep needs. ``off``: overrides that switch off the task's own checkpoint selection
# in the sweep's runs and in the refit (landmarks' val_split may name a test split such as 300W "common");
# ``search_only``: overrides of the sweep's runs only (no IJB evaluation of runs that are only validated).
TASKS = {
    "landmarks": dict(module="landmarks.train", keys=landmarks_keys, group=_source_image, native=lambda cfg: None,
                      score=landmarks_score, test=landmarks_test, off=("data.val_split=",)),
    "au_intensity": dict(module="au_intensity.train", keys=au_keys, group=_subject, native=au_native,
                         score=au_score, test=au_test, off=("data.val_split=",)),
    "emotion": dict(module="emotion.train", keys=emotion_keys, group=_whole_key, native=lambda cfg: None,
                    score=emotion_score, test=emotion_test, off=()),
    "reconstruction3d": dict(module="reconstruction3d.train", keys=r3d_keys, group=r3d_group,
                             native=lambda cfg: None, score=r3d_score, test=r3d_test, off=()),
    "face_recognition": dict(module="face_recognition.train", keys=fr_keys, group=_subject, native=lambda cfg: None,
                             score=fr_score, test=fr_test, off=(), search_only=("eval.after_train=false",)),
}


def carve(keys, group, fraction, seed):
    """(train keys, validation keys): ``fraction`` of the groups (at least one, and never all), drawn
    with ``common.subsample.subset_keys`` so the draw is a function of the keys and seed only."""
    from common.subsample import subset_keys
    groups = sorted({group(k) for k in keys})
    if len(groups) < 2:
        raise ValueError(f"cannot hold out a validation set: the training data has {len(groups)} group(s)")
    held = set(subset_keys(groups, fraction, seed))
    if len(held) == len(groups):          # keep at least one group to train on
        held.discard(groups[-1])
    val = sorted(k for k in keys if group(k) in held)
    return sorted(k for k in keys if group(k) not in held), val


def data_point_keys(cfg, keys_fn):
    """The training keys of the configured data point: the task's own few-shot rule (App. A.3):
    ``data.subset_file`` wins, else ``subset_keys(keys, data.fraction, data.subset_seed)`` below 1."""
    from common.subsample import load_keys, subset_keys
    keys = list(keys_fn(cfg))
    if cfg.data.get("subset_file"):
        return load_keys(cfg.data.subset_file)
    if cfg.data.fraction < 1.0:
        return subset_keys(keys, cfg.data.fraction, cfg.data.subset_seed)
    return sorted(keys)


if __name__ == "__main__":
    print(default_grid(*sys.argv[1:3]))
