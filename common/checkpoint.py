"""Checkpoints: atomic save, weights_only load, resume with RNG state, and strict backbone loading
from our own, FRL, SwAV, MoCo and torchvision files (DESIGN.md "Initialisation and checkpoints").

Foreign layouts (facts in ../shared/research/anchors_frl_swav.md):
- FRL release (§1.5): ``{"state_dict": sd}``, backbone ``module.base_net.*``, heads
  ``module.projection_net.*`` and ``module.prototypes.*``.
- SwAV (§2.13): ``module.*`` either bare or under ``"state_dict"``, heads ``module.projection_head.*``
  and ``module.prototypes.*``.
- MoCo (facebookresearch/moco ``main_moco.py``): ``{"state_dict": sd}``, backbone
  ``module.encoder_q.*`` (its ``fc`` is the projection MLP), momentum encoder ``module.encoder_k.*``
  and the queue ``module.queue``, ``module.queue_ptr``.
- torchvision: bare ``conv1.weight`` ... ``fc.bias``.
- timm (``timm.models.resnet.ResNet``, e.g. ``resnet50.a1_in1k``): timm's ResNet keeps torchvision's
  module names (``conv1``, ``bn1``, ``layer1.0.conv1`` .. ``layer4.2.bn3``, ``fc``), so its bare state
  dict is read as the torchvision layout; its training checkpoints wrap it as ``{"state_dict": sd}``
  (or ``{"model": sd}``) and DDP / wrapper modules prefix ``module.`` (read as the SwAV layout, whose
  heads are absent) or ``model.`` (the "timm" layout below). Deep-stem variants (resnet50d:
  ``conv1.0``...) have no torchvision counterpart and fail the strict load naming the keys.
The backbone is loaded strictly: every tensor must be present with the right shape. Apart from the
backbone only the keys above (projection heads, prototypes, ``fc``, MoCo's key encoder and queue)
may be dropped; in our own checkpoints every key outside ``backbone.`` is a head and is dropped.
"""
import errno
import os
import pickle
import random
import re
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.logger import log

BACKBONE_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")

# (name, backbone key prefix, keys/subtrees that may be dropped; None = everything outside the prefix)
_LAYOUTS = (
    ("facerep", "backbone.", None),
    ("FRL", "module.base_net.", ("module.projection_net", "module.prototypes")),
    ("MoCo", "module.encoder_q.", ("module.encoder_k", "module.queue", "module.queue_ptr")),
    ("SwAV", "module.", ("module.projection_head", "module.prototypes")),
    ("timm", "model.", ()),
    ("torchvision", "", ()),
)
_PLAIN_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None),
                torch.Tensor, torch.Size, torch.dtype, torch.device)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _check_plain(obj, where: str) -> None:
    """Raise TypeError naming the entry that torch.load(weights_only=True) would refuse."""
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple, set):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN_TYPES) or isinstance(obj, np.generic):  # np.float64 is a float
        raise TypeError(f"checkpoint entry {where} has type {type(obj).__module__}.{type(obj).__name__}; "
                        f"checkpoints hold plain data only (dict/list/str/number/tensor) so that "
                        f"torch.load(weights_only=True) can read them")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path) -> list:
    """Delete the temporary files save_checkpoint(path) leaves when killed mid-write
    (``.NAME.XXXXXXXX.tmp`` next to it, mkstemp's pattern); returns the removed paths."""
    path = Path(path)
    pattern = re.compile(re.escape(_temp_prefix(path)) + r"[A-Za-z0-9_]{8}\.tmp")
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)] if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _is_disk_full(error: BaseException) -> bool:
    """ENOSPC, or the RuntimeError torch.save's zip writer raises when a write fails."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, RuntimeError) and ("enforce fail" in str(error) or "No space" in str(error))


def save_checkpoint(path, state) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then os.replace.
    Temporary files of earlier killed saves to ``path`` are removed first; a full disk is reported
    as "no space left writing PATH"."""
    path = Path(path)
    _check_plain(state, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temps(path):
        log(f"removed {stale}, left by an interrupted save")
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _is_disk_full(e):
            raise OSError(errno.ENOSPC, f"no space left writing {path}") from e
        raise


def _is_torch_file(path: Path) -> bool:
    """True when the file starts as torch.save writes: a zip archive, or a pickle (protocol 2-5)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_checkpoint(path):
    """torch.load(path, map_location="cpu", weights_only=True) with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not _is_torch_file(path):
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; "
                         f"{path.stat().st_size} bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not loadable with weights_only=True (it holds more than plain "
                         f"data): {e}") from e
    except (RuntimeError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: unreadable or truncated checkpoint: {e}") from e


def _is_dropped(key: str, dropped) -> bool:
    return any(key == d or key.startswith(d + ".") for d in dropped)


def _extract(obj, source: str):
    """(layout name, backbone state dict with torchvision names, no fc) from a loaded checkpoint."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict checkpoint, got {type(obj).__name__}")
    sd = obj
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), dict):
            sd = obj[wrapper]
            break
    for name, prefix, dropped in _LAYOUTS:
        if prefix + "conv1.weight" in sd:
            break
    else:
        raise ValueError(
            f"{source}: unknown checkpoint layout (no conv1.weight under any of the prefixes "
            f"{[p for _, p, _ in _LAYOUTS]}); top-level keys {list(obj)[:10]}, first state-dict "
            f"keys {list(sd)[:10]}")
    backbone, unexpected = {}, []
    for key, value in sd.items():
        if dropped is not None and _is_dropped(key, dropped):
            continue
        if key.startswith(prefix):
            short = key[len(prefix):]
            top = short.split(".", 1)[0]
            if top in BACKBONE_MODULES:
                backbone[short] = value
            elif top != "fc":
                unexpected.append(key)
        elif dropped is not None:
            unexpected.append(key)
    if unexpected:
        raise ValueError(f"{source}: {name} layout has keys that are neither backbone nor a head "
                         f"allowed to be dropped: {unexpected[:20]}")
    bad = [k for k, v in backbone.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: non-tensor backbone entries {bad[:10]}")
    return name, backbone


def backbone_state_dict(obj, source: str = "checkpoint") -> dict:
    """Backbone tensors with torchvision names (conv1.weight, ..., no fc) from a loaded checkpoint
    in any recognised layout; ``source`` names the file in error messages."""
    return _extract(obj, source)[1]


def backbone_arch(backbone_sd: dict) -> str:
    """resnet50 (bottleneck blocks have conv3) or resnet18, from backbone tensor names."""
    return "resnet50" if "layer1.0.conv3.weight" in backbone_sd else "resnet18"


def load_backbone(backbone: nn.Module, path) -> str:
    """Load the backbone weights of the checkpoint at ``path`` strictly; returns the layout name."""
    backbone = unwrap(backbone)
    name, sd = _extract(load_checkpoint(path), str(path))
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{path} ({name} layout) does not match the {getattr(backbone, 'arch', '')} "
                         f"backbone: missing keys {missing[:20]} ({len(missing)} in all), "
                         f"unexpected keys {unexpected[:20]} ({len(unexpected)} in all)")
    wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if sd[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path} ({name} layout): shape mismatch (checkpoint vs model) {wrong[:20]}")
    backbone.load_state_dict(sd, strict=True)
    return name


def export_torchvision(backbone: nn.Module, path) -> None:
    """Save a state dict that loads with strict=True into torchvision's ResNet whose fc is
    nn.Identity()."""
    sd = {k: v.detach().cpu().clone() for k, v in unwrap(backbone).state_dict().items()}
    outside = [k for k in sd if k.split(".", 1)[0] not in BACKBONE_MODULES]
    if outside:
        raise ValueError(f"export_torchvision expects a Backbone; got extra keys {outside[:10]}")
    save_checkpoint(path, sd)


def rng_state() -> dict:
    """Python, NumPy, torch CPU and (when present) current-CUDA-device RNG states as plain data."""
    version, mt_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() captured; a CUDA state is skipped when CUDA is absent."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def make_state(model, optimizer=None, scaler=None, epoch=0, iteration=0, config=None, **others) -> dict:
    """Our checkpoint dict: model/optimizer/scaler state dicts, epoch, iteration, RNG, config, and
    ``others`` (objects with state_dict(), e.g. a queue or sampler, or plain values)."""
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    state = {"model": unwrap(model).state_dict(), "epoch": int(epoch), "iteration": int(iteration),
             "rng": rng_state(), "config": config}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    for key, value in others.items():
        if key in state:
            raise ValueError(f"make_state: extra entry {key!r} clashes with a reserved key")
        state[key] = value.state_dict() if hasattr(value, "state_dict") else value
    return state


def restore(path, model, optimizer=None, scaler=None, **others) -> dict:
    """Resume from our checkpoint at ``path``: strict model load, optimizer, scaler, every object
    in ``others`` (by its key), RNG states. Returns the remaining entries (epoch, iteration, ...).

    The RNG state is the one make_state() captured on the saving rank; with several ranks, reseed
    per rank after restoring (e.g. seed + rank + epoch) if streams must differ between ranks."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        keys = list(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a facerep checkpoint (no 'model' entry; found {keys})")
    try:
        unwrap(model).load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: model state does not match: {e}") from e
    objects = {"optimizer": optimizer, "scaler": scaler, **others}
    for key, obj in objects.items():
        if obj is None:
            continue
        if key not in state:
            raise KeyError(f"{path}: checkpoint has no {key!r} entry to restore (has {list(state)})")
        obj.load_state_dict(state[key])
    if "rng" in state:
        set_rng_state(state["rng"])
    consumed = {"model", "optimizer", "scaler", "rng", *others}
    return {k: v for k, v in state.items() if k not in consumed}
