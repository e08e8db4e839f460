"""torch.hub entry points: the pre-trained face backbones of the paper (Bulat et al., ECCV 2022,
§3-4, https://arxiv.org/abs/2103.16554) and this repository's task models, loaded strictly.

    model = torch.hub.load("/path/to/facerep", "frl_resnet50", source="local")           # FRL VGG-Face
    model = torch.hub.load("/path/to/facerep", "facerep_backbone", source="local",
                           checkpoint="runs/swav_vgg/last.pth")                          # ours
    model = torch.hub.load("/path/to/facerep", "facerep_landmarks", source="local",
                           checkpoint="runs/300w/best.pth")

``checkpoint`` / ``weights`` is a local path (works offline), an http(s) or file URL (downloaded
once into torch.hub.get_dir()/checkpoints, reused offline afterwards), or a name of the weights
table common/weights.py. The file's sha256 is checked when one is known or passed (``sha256=``).
Every function loads with strict=True (the task-specific parts that are not part of the model,
such as CosFace's class centres, are the only tensors left out) and returns the model in eval()
mode on the CPU. Inputs are RGB crops normalised with mean (0.485, 0.456, 0.406) and std
(0.228, 0.224, 0.225), SwAV's values, kept by FRL and by every task here.
"""
dependencies = ["torch", "torchvision"]


def _load(spec, sha256):
    from common.checkpoint import load_checkpoint
    from common.weights import resolve
    path = resolve(spec, sha256=sha256)
    return path, load_checkpoint(path)


def _model_config(state) -> dict:
    return ((state.get("config") or {}).get("model") or {}) if isinstance(state, dict) else {}


def _backbone_from_state(state, path, *, torchvision: bool, arch=None):
    import torch
    import torchvision as tv
    from common.backbone import Backbone
    from common.checkpoint import backbone_arch, backbone_state_dict
    sd = backbone_state_dict(state, path)
    found = backbone_arch(sd)
    if arch is not None and found != arch:
        raise ValueError(f"{path}: holds a {found} backbone, expected {arch}")
    group_norm = _model_config(state).get("norm", "batch") == "group"
    if torchvision:
        if group_norm:
            raise ValueError(f"{path}: a GroupNorm backbone (model.norm=group) has no torchvision equivalent")
        model = getattr(tv.models, found)(weights=None)
        model.fc = torch.nn.Identity()
    else:
        model = Backbone(found)
        if group_norm:  # pre-training test runs (pretrain.train model.norm=group)
            from pretrain.train import replace_batchnorm
            replace_batchnorm(model)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def frl_resnet50(weights: str = "frl_vgg_face", *, sha256: str | None = None, torchvision: bool = False):
    """The official FRL SwAV ResNet-50 (paper §3; anchors_frl_swav.md §1.4-1.5), backbone only.

    ``weights``: "frl_vgg_face" (VGG-Face, all of VGGFace2; paper Table 2 at 100 % of the labels:
    300W NME 3.85, DISFA ICC .598, IJB-B TAR@FAR=1e-4 0.912), "frl_vgg_face_1m" (VGG-Face-small:
    3.91, .583, 0.910), "frl_flickr_face" (Flickr-Face: 300W NME 3.86, IJB-B 0.911; removed from the
    FRL README in 2024), or a path / URL of a file in the FRL layout. Returns common.backbone.Backbone
    (forward: N x 2048 pooled features; feature_maps: layer1-4), or with ``torchvision=True``
    torchvision's resnet50 with ``fc = nn.Identity()``. The release's projection head and prototypes
    are the only keys dropped; every backbone tensor must be present.
    """
    path, state = _load(weights, sha256)
    return _backbone_from_state(state, path, torchvision=torchvision, arch="resnet50")


def facerep_backbone(checkpoint: str, *, sha256: str | None = None, torchvision: bool = False):
    """The backbone of any facerep checkpoint: pretrain.train's last.pth or backbone.pth, its
    backbone_torchvision.pth, or a task's last.pth / best.pth (also FRL, SwAV, MoCo and torchvision
    files). Returns common.backbone.Backbone, or torchvision's resnet with ``fc = nn.Identity()``
    when ``torchvision=True``. Our SwAV recipe (pretrain/configs/swav_r50.yaml) reproduces the
    paper's VGG-Face model; its numbers are in the task READMEs next to the paper's."""
    path, state = _load(checkpoint, sha256)
    return _backbone_from_state(state, path, torchvision=torchvision)


def facerep_pretrain(checkpoint: str, *, sha256: str | None = None):
    """The whole pre-training model of a pretrain.train checkpoint (SwAV: backbone, projection head
    and prototypes; MoCo-v2: the query encoder), built from the checkpoint's config."""
    from pretrain.train import build_model
    path, state = _load(checkpoint, sha256)
    cfg = (state.get("config") or {}) if isinstance(state, dict) else {}
    if "method" not in cfg or "model" not in state:
        raise ValueError(f"{path}: not a pretrain.train checkpoint (no config.method / model entries)")
    m = cfg["model"]
    model = build_model(method=cfg["method"], arch=m["arch"], init="scratch", norm=m["norm"], hidden_dim=m["hidden_dim"],
                        out_dim=m["out_dim"], n_prototypes=cfg["swav"]["n_prototypes"])
    model.load_state_dict(state["model"], strict=True)
    return model.eval()


def _task_state(checkpoint, sha256, head_key, task):
    path, state = _load(checkpoint, sha256)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or head_key not in state["model"]:
        raise ValueError(f"{path}: not a checkpoint of {task}.train (no model.{head_key})")
    return path, state, state["model"]


def _strict(model, sd):
    model.load_state_dict(sd, strict=True)
    return model.eval()


def facerep_face_recognition(checkpoint: str, *, sha256: str | None = None):
    """The face embedder of a face_recognition.train checkpoint (paper §5.1: backbone + linear head
    h(.)): aligned 112 px faces -> raw embeddings (L2-normalise them for cosine scores). CosFace's
    class centres are training-only and left out; everything else loads strictly."""
    from face_recognition.model import embedder_from_state
    path, state, sd = _task_state(checkpoint, sha256, "backbone.conv1.weight", "face_recognition")
    m = _model_config(state)
    head = m.get("head", "linear")
    dim = sd["head.weight" if head == "linear" else "head.2.weight"].shape[0]
    embedder = embedder_from_state(state, path, arch=m.get("arch") or _arch_of(sd), embedding_dim=dim, head=head)
    return embedder.eval()


def _arch_of(sd: dict) -> str:
    from common.checkpoint import backbone_arch
    return backbone_arch({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})


def facerep_landmarks(checkpoint: str, *, sha256: str | None = None):
    """The landmark model of a landmarks.train checkpoint (paper §5.2: backbone + heatmap head):
    crops -> N x points x H/4 x W/4 heatmaps (landmarks/heatmaps.py decodes them)."""
    from common.backbone import Backbone
    from landmarks.heatmap_head import LandmarkModel
    _, state, sd = _task_state(checkpoint, sha256, "head.out.weight", "landmarks")
    width = _model_config(state).get("head_width", 256)
    return _strict(LandmarkModel(Backbone(_arch_of(sd)), sd["head.out.weight"].shape[0], width), sd)


def facerep_au_intensity(checkpoint: str, *, sha256: str | None = None):
    """The AU intensity model of an au_intensity.train checkpoint (paper §5.3: backbone + linear
    head): face crops -> N x AUs intensities on the 0-5 label scale."""
    from au_intensity.model import AUIntensityNet
    from common.backbone import Backbone
    _, _, sd = _task_state(checkpoint, sha256, "head.weight", "au_intensity")
    return _strict(AUIntensityNet(Backbone(_arch_of(sd)), sd["head.weight"].shape[0]), sd)


def facerep_emotion(checkpoint: str, *, sha256: str | None = None):
    """The emotion model of an emotion.train checkpoint (paper App. D.1: backbone + linear head):
    crops -> {"valence", "arousal"} in [-1, 1] and expression "logits"."""
    from common.backbone import Backbone
    from emotion.model import EmotionNet
    _, _, sd = _task_state(checkpoint, sha256, "head.weight", "emotion")
    return _strict(EmotionNet(Backbone(_arch_of(sd)), sd["head.weight"].shape[0] - 2), sd)


def facerep_reconstruction3d(checkpoint: str, *, data_root: str | None = None, topology: str | None = None,
                             sha256: str | None = None):
    """The 3D face model of a reconstruction3d.train checkpoint (paper §5.4: backbone + spiral mesh
    decoder): crops -> N x vertices x 3. The decoder is built on the mesh hierarchy of the training
    topology: ``topology`` (default: the checkpoint config's model.topology, relative to ``data_root``,
    default the config's data.root), checked against the hierarchy the checkpoint was trained on."""
    from reconstruction3d.data import load_topology
    from reconstruction3d.eval import load_model
    from reconstruction3d.train import mesh_hierarchy
    path, state, _ = _task_state(checkpoint, sha256, "backbone.conv1.weight", "reconstruction3d")
    cfg = state.get("config") or {}
    m = cfg.get("model") or {}
    if not m:
        raise ValueError(f"{path}: no model config in the checkpoint to rebuild the mesh decoder from")
    mesh = load_topology(topology or m["topology"], data_root or (cfg.get("data") or {}).get("root") or "")[0]
    hierarchy = mesh_hierarchy(mesh, factors=m["factors"], lengths=m["spiral_length"], dilations=m["dilation"],
                               cache_dir=m.get("mesh_cache", ""))
    return load_model(path, arch=m["arch"], channels=m["channels"], hierarchy=hierarchy).eval()
