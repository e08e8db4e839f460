"""hubconf.py through torch.hub.load(repo, name, source="local"), offline.

- A checkpoint written by pretrain.train loads as our backbone, as a torchvision resnet and as the
  whole SwAV model, each tensor equal to the checkpoint's; the exports load to the same backbone.
- A URL (file://) is downloaded once into the hub cache and then used offline; a wrong sha256 is
  refused, the right one accepted; the weights table's hash is checked for names.
- An FRL-layout file loads strictly into frl_resnet50 (heads dropped; a missing tensor or another
  architecture is refused).
- The task entry points rebuild each task model from a checkpoint in that task's format.
"""
import hashlib
import os

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import load_config
from common.weights import WEIGHTS, Weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hub(name, **kwargs):
    return torch.hub.load(ROOT, name, source="local", **kwargs)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-iteration pretrain.train run (resnet18, BatchNorm) with its exports."""
    from pretrain.train import main
    root = tmp_path_factory.mktemp("hub")
    for i in range(8):
        Image.new("RGB", (32, 32), (30 * i, 255 - 30 * i, 90)).save(root / f"{i}.png")
    out = root / "run"
    main(load_config(os.path.join(ROOT, "pretrain", "configs", "synthetic.yaml"),
                     [f"data.root={root}", f"out={out}", "data.batch_size=8", "optim.epochs=1",
                      "aug.crop_sizes=[32,16]", "aug.crop_counts=[2,0]", "model.hidden_dim=32"]))
    return out


@pytest.fixture
def hub_dir(tmp_path):
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


def test_pretrain_checkpoint_loads_as_backbone_torchvision_and_swav(run):
    last = str(run / "last.pth")
    state = load_checkpoint(last)
    backbone = _hub("facerep_backbone", checkpoint=last)
    sd = backbone.state_dict()
    assert backbone.arch == "resnet18" and not backbone.training
    assert all(torch.equal(v, state["model"][f"backbone.{k}"]) for k, v in sd.items())
    x = torch.randn(2, 3, 32, 32)
    for other in (_hub("facerep_backbone", checkpoint=str(run / "backbone.pth")),
                  _hub("facerep_backbone", checkpoint=str(run / "backbone_torchvision.pth")),
                  _hub("facerep_backbone", checkpoint=last, torchvision=True)):
        assert torch.allclose(other(x), backbone(x), atol=1e-6)
    tv = _hub("facerep_backbone", checkpoint=last, torchvision=True)
    assert isinstance(tv, torchvision.models.ResNet) and isinstance(tv.fc, nn.Identity)
    swav = _hub("facerep_pretrain", checkpoint=last)
    assert swav.state_dict().keys() == state["model"].keys()
    assert all(torch.equal(v, state["model"][k]) for k, v in swav.state_dict().items())
    assert swav.prototypes.weight.shape == (16, 16)


def test_url_download_cache_and_sha256(run, hub_dir, tmp_path):
    src = tmp_path / "served" / "weights.pth"
    src.parent.mkdir()
    src.write_bytes((run / "backbone.pth").read_bytes())
    digest = _sha(src)
    url = src.as_uri()
    model = _hub("facerep_backbone", checkpoint=url, sha256=digest)
    assert (hub_dir / "checkpoints" / "weights.pth").is_file()
    os.remove(src)  # offline from now on: the cached copy is used
    again = _hub("facerep_backbone", checkpoint=url)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="does not match the expected"):
        _hub("facerep_backbone", checkpoint=url, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        _hub("facerep_backbone", checkpoint=str(tmp_path / "nope.pth"))


def _frl_file(path, arch="resnet50", drop=None):
    """A file in the FRL release layout (anchors_frl_swav.md §1.5): backbone under module.base_net.,
    projection head and 3000 x 128 prototypes."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)()
    sd = {f"module.base_net.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd.pop(drop, None)
    sd.update({"module.projection_net.net.0.weight": torch.zeros(8, 8), "module.projection_net.net.0.bias":
               torch.zeros(8), "module.prototypes.weight": torch.zeros(3000, 128)})
    save_checkpoint(path, {"epoch": 400, "state_dict": sd})
    return net


def test_frl_release_layout_by_name_with_table_hash(hub_dir, tmp_path, monkeypatch):
    path = tmp_path / "flr_r50_vgg_face.pth"
    net = _frl_file(path)
    monkeypatch.setitem(WEIGHTS, "frl_vgg_face", Weights(path.as_uri(), "resnet50", _sha(path), "test copy"))
    model = _hub("frl_resnet50")  # the default name, through the table (file URL), hash checked
    net.fc = nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model(x), net.eval()(x), atol=1e-5)
    monkeypatch.setitem(WEIGHTS, "frl_vgg_face", Weights(path.as_uri(), "resnet50", "f" * 64, "wrong hash"))
    with pytest.raises(ValueError, match="does not match the expected"):
        _hub("frl_resnet50")
    small = tmp_path / "r18.pth"
    _frl_file(small, arch="resnet18")
    with pytest.raises(ValueError, match="holds a resnet18 backbone, expected resnet50"):
        _hub("frl_resnet50", weights=str(small))
    assert _hub("facerep_backbone", checkpoint=str(small)).arch == "resnet18"
    _frl_file(small, arch="resnet18", drop="module.base_net.layer4.1.bn2.running_var")
    with pytest.raises(RuntimeError, match=r"layer4\.1\.bn2\.running_var"):
        _hub("facerep_backbone", checkpoint=str(small))


def _same(model, sd):
    return model.state_dict().keys() == sd.keys() and all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_task_entry_points_rebuild_each_task_model(tmp_path):
    from au_intensity.model import AUIntensityNet
    from common.backbone import Backbone
    from emotion.model import EmotionNet
    from face_recognition.model import FaceRecognitionModel
    from landmarks.heatmap_head import LandmarkModel
    torch.manual_seed(0)
    cases = {
        "facerep_landmarks": (LandmarkModel(Backbone("resnet18"), 68, 32), {"model": {"arch": "resnet18", "head_width": 32}}),
        "facerep_au_intensity": (AUIntensityNet(Backbone("resnet18"), 12), {}),
        "facerep_emotion": (EmotionNet(Backbone("resnet18"), 8), {}),
    }
    for name, (model, config) in cases.items():
        path = tmp_path / f"{name}.pth"
        save_checkpoint(path, {"model": model.state_dict(), "config": config, "epoch": 1})
        assert _same(_hub(name, checkpoint=str(path)), model.state_dict()), name
    recog = FaceRecognitionModel(Backbone("resnet18"), 10, embedding_dim=24)
    save_checkpoint(tmp_path / "fr.pth", {"model": recog.state_dict(),
                                          "config": {"model": {"arch": "resnet18", "head": "linear"}}})
    embedder = _hub("facerep_face_recognition", checkpoint=str(tmp_path / "fr.pth"))
    assert _same(embedder, {k: v for k, v in recog.state_dict().items() if not k.startswith("cosface.")})
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(embedder(x), recog.eval().embed(x))
    with pytest.raises(ValueError, match="not a checkpoint of emotion.train"):
        _hub("facerep_emotion", checkpoint=str(tmp_path / "facerep_landmarks.pth"))
