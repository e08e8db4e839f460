"""Tests for common/backbone.py and common/checkpoint.py (DESIGN.md "Initialisation and checkpoints")."""
import errno
import os
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from common import checkpoint as ckpt
from common.backbone import Backbone, build_backbone


@pytest.fixture(scope="module")
def source():
    """A randomly initialised torchvision resnet18 (with fc) and its reference state dict."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # make BN buffers non-default so a missed copy cannot pass
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _backbone_keys(sd):
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def _swav_head():
    return {"projection_head.0.weight": torch.randn(16, 512), "projection_head.1.running_mean": torch.zeros(16),
            "projection_head.3.weight": torch.randn(8, 16), "prototypes.weight": torch.randn(30, 8)}


def _layouts(tv):
    """Checkpoint objects in each foreign layout, built from the torchvision state dict ``tv``."""
    frl = {f"module.base_net.{k}": v for k, v in _backbone_keys(tv).items()}
    frl.update({"module.projection_net.net.0.weight": torch.randn(16, 512),
                "module.projection_net.net.1.num_batches_tracked": torch.tensor(3),
                "module.projection_net.net.3.bias": torch.randn(8), "module.prototypes.weight": torch.randn(30, 8)})
    swav = {f"module.{k}": v for k, v in {**_backbone_keys(tv), **_swav_head()}.items()}
    moco = {f"module.encoder_q.{k}": v for k, v in _backbone_keys(tv).items()}
    moco.update({"module.encoder_q.fc.0.weight": torch.randn(16, 512), "module.encoder_q.fc.2.bias": torch.randn(8),
                 "module.encoder_k.conv1.weight": torch.randn(64, 3, 7, 7), "module.encoder_k.fc.2.bias": torch.randn(8),
                 "module.queue": torch.randn(8, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    ours = {f"backbone.{k}": v for k, v in _backbone_keys(tv).items()}
    ours.update({"head.weight": torch.randn(2, 512), "prototypes.weight": torch.randn(30, 8)})
    return {
        "FRL": {"state_dict": frl, "epoch": 400},
        "SwAV": {"state_dict": swav, "epoch": 800, "optimizer": {}},
        "SwAV-bare": swav,
        "MoCo": {"state_dict": moco, "epoch": 200, "arch": "resnet18"},
        "facerep": {"model": ours, "epoch": 3, "iteration": 30},
        "torchvision": dict(tv),
    }


@pytest.mark.parametrize("layout", ["FRL", "SwAV", "SwAV-bare", "MoCo", "facerep", "torchvision"])
def test_every_layout_loads_every_backbone_tensor(layout, source, tmp_path):
    obj = _layouts(source)[layout]
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    sd = ckpt.backbone_state_dict(obj)
    assert set(sd) == set(_backbone_keys(source))
    backbone = Backbone("resnet18")
    name = ckpt.load_backbone(backbone, path)
    assert name == layout.split("-")[0]
    loaded = backbone.state_dict()
    for k, v in _backbone_keys(source).items():
        assert torch.equal(loaded[k], v), k
    # the path form of init goes through the same loader
    assert torch.equal(build_backbone("resnet18", str(path)).layer4[1].bn2.running_var,
                       source["layer4.1.bn2.running_var"])


def test_missing_backbone_key_raises_naming_it(source, tmp_path):
    obj = _layouts(source)["FRL"]
    del obj["state_dict"]["module.base_net.layer3.1.bn1.running_mean"]
    torch.save(obj, tmp_path / "c.pth")
    with pytest.raises(ValueError, match=r"missing keys \['layer3.1.bn1.running_mean'\]"):
        ckpt.load_backbone(Backbone("resnet18"), tmp_path / "c.pth")


def test_unknown_extra_key_and_shape_mismatch_and_unknown_layout_raise(source, tmp_path):
    obj = _layouts(source)["FRL"]
    obj["state_dict"]["module.decoder.weight"] = torch.zeros(1)  # not a head that may be dropped
    with pytest.raises(ValueError, match="module.decoder.weight"):
        ckpt.backbone_state_dict(obj)
    bad = dict(source, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight: \(64, 64, 1, 1\) vs \(64, 64, 3, 3\)"):
        ckpt.load_backbone(Backbone("resnet18"), tmp_path / "shape.pth")
    torch.save(source, tmp_path / "r18.pth")  # resnet18 weights into a resnet50 backbone
    with pytest.raises(ValueError, match="layer1.0.conv3.weight"):
        ckpt.load_backbone(Backbone("resnet50"), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"unknown checkpoint layout.*'encoder.stem.weight'"):
        ckpt.backbone_state_dict({"encoder.stem.weight": torch.zeros(1)})


def test_atomic_save_keeps_old_file_when_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "last.pth"
    ckpt.save_checkpoint(path, {"epoch": 1, "w": torch.arange(3)})

    def broken_save(obj, f):
        f.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temporary file left


def test_save_rejects_non_plain_data_and_load_errors_name_the_file(tmp_path):
    import argparse
    with pytest.raises(TypeError, match=r"state\['config'\]\['args'\].*Namespace"):
        ckpt.save_checkpoint(tmp_path / "a.pth", {"config": {"args": argparse.Namespace(lr=1)}})
    with pytest.raises(TypeError, match=r"state\['lr'\].*float64"):  # a float subclass, refused on load
        ckpt.save_checkpoint(tmp_path / "a.pth", {"lr": np.float64(0.1)})
    assert not (tmp_path / "a.pth").exists()
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ckpt.load_checkpoint(tmp_path / "nope.pth")
    torch.save({"x": np.zeros(2)}, tmp_path / "np.pth")
    with pytest.raises(ValueError, match="np.pth.*weights_only"):
        ckpt.load_checkpoint(tmp_path / "np.pth")


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    state = ckpt.rng_state()
    ckpt.save_checkpoint(tmp_path / "rng.pth", state)
    state = ckpt.load_checkpoint(tmp_path / "rng.pth")  # weights_only=True accepts it

    def draw():
        return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4).tolist()

    first = draw()
    ckpt.set_rng_state(state)
    assert draw() == first


class _Queue(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("queue", torch.zeros(4, 2))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))


def test_restore_round_trips_model_optimizer_scaler_others_and_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 3)).pow(2).sum().backward()
    opt.step()  # creates momentum buffers
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    queue = _Queue()
    queue.queue.normal_()
    queue.ptr.fill_(3)
    state = ckpt.make_state(model, opt, scaler, epoch=5, iteration=50, config={"optim": {"lr": 0.1}},
                            queue=queue, best_nme=3.25)
    ckpt.save_checkpoint(tmp_path / "last.pth", state)
    expected_next = torch.rand(5)

    torch.manual_seed(123)
    model2 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5, momentum=0.9)
    scaler2, queue2 = torch.amp.GradScaler("cpu"), _Queue()
    rest = ckpt.restore(tmp_path / "last.pth", model2, opt2, scaler2, queue=queue2)

    assert rest == {"epoch": 5, "iteration": 50, "config": {"optim": {"lr": 0.1}}, "best_nme": 3.25}
    assert torch.equal(torch.rand(5), expected_next)  # RNG restored
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == 0.1
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])
    assert scaler2.state_dict() == scaler.state_dict() and scaler2.get_scale() == 512.0
    assert torch.equal(queue2.queue, queue.queue) and queue2.ptr.item() == 3
    with pytest.raises(KeyError, match="'sampler'"):
        ckpt.restore(tmp_path / "last.pth", model2, sampler=_Queue())
    with pytest.raises(ValueError, match="model state does not match"):
        ckpt.restore(tmp_path / "last.pth", nn.Sequential(nn.Linear(3, 5)))


def test_restore_unwraps_wrapped_model_and_our_layout_loads_backbone(tmp_path):
    task = nn.Module()
    task.backbone, task.head = Backbone("resnet18"), nn.Linear(512, 2)
    wrapped = nn.DataParallel(task)  # same .module unwrapping as DDP
    ckpt.save_checkpoint(tmp_path / "t.pth", ckpt.make_state(wrapped, epoch=1))
    state = ckpt.load_checkpoint(tmp_path / "t.pth")
    assert "backbone.conv1.weight" in state["model"] and "head.weight" in state["model"]
    fresh = Backbone("resnet18")
    assert ckpt.load_backbone(fresh, tmp_path / "t.pth") == "facerep"
    assert torch.equal(fresh.layer2[0].downsample[0].weight, task.backbone.layer2[0].downsample[0].weight)


@pytest.mark.parametrize("arch,builder", [("resnet18", torchvision.models.resnet18),
                                          ("resnet50", torchvision.models.resnet50)])
def test_export_loads_strictly_into_torchvision_and_matches_outputs(arch, builder, tmp_path):
    torch.manual_seed(0)
    backbone = Backbone(arch).eval()
    ckpt.export_torchvision(backbone, tmp_path / "tv.pth")
    net = builder(weights=None)
    net.fc = nn.Identity()
    net.load_state_dict(ckpt.load_checkpoint(tmp_path / "tv.pth"), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), backbone(x))


@pytest.mark.parametrize("arch,channels", [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))])
def test_feature_maps_shapes_and_pooled_forward(arch, channels):
    torch.manual_seed(0)
    backbone = Backbone(arch).eval()
    assert backbone.channels == channels and backbone.num_features == channels[-1]
    assert not any(k.startswith("fc.") for k in backbone.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        maps = backbone.feature_maps(x)
        pooled = backbone(x)
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))]
    torch.testing.assert_close(pooled, nn.functional.adaptive_avg_pool2d(maps[-1], 1).flatten(1))


def test_imagenet_init_uses_local_hub_cache_only(source, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected_file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet18", "imagenet")
    assert str(expected_file) in str(err.value) and "model.init=/path/to/" in str(err.value)
    with pytest.raises(FileNotFoundError, match="resnet50-0676ba61.pth"):
        build_backbone("resnet50", "imagenet")
    expected_file.parent.mkdir(parents=True)
    torch.save(source, expected_file)
    backbone = build_backbone("resnet18", "imagenet")
    for k, v in _backbone_keys(source).items():
        assert torch.equal(backbone.state_dict()[k], v), k


def test_bad_init_and_arch_raise():
    with pytest.raises(FileNotFoundError, match="'scratch', 'imagenet' or a checkpoint path"):
        build_backbone("resnet18", "imagnet")
    with pytest.raises(ValueError, match="resnet34"):
        Backbone("resnet34")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_and_cuda_tensors_round_trip(tmp_path):
    torch.cuda.manual_seed(5)
    model = nn.Linear(3, 2).cuda()
    ckpt.save_checkpoint(tmp_path / "g.pth", ckpt.make_state(model, epoch=2))
    expected = torch.rand(4, device="cuda")
    state = ckpt.load_checkpoint(tmp_path / "g.pth")
    assert state["model"]["weight"].device.type == "cpu" and "cuda" in state["rng"]
    model2 = nn.Linear(3, 2).cuda()
    assert ckpt.restore(tmp_path / "g.pth", model2)["epoch"] == 2
    assert torch.equal(torch.rand(4, device="cuda"), expected)
    assert torch.equal(model2.weight, model.weight)


class _RunsCode:
    """A pickled payload that would call a function on load."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_random_bytes_are_not_a_checkpoint_and_code_payloads_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    noise = bytes([1]) + rng.integers(0, 256, 4095, dtype=np.uint8).tobytes()   # not 0x80 / "PK" first
    for name, data in (("noise.pth", noise), ("text.pth", b"hello world\n" * 10), ("empty.pth", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name}: not a PyTorch checkpoint") as err:
            ckpt.load_checkpoint(tmp_path / name)
        assert "weights_only=False" not in str(err.value)
    torch.save({"model": _RunsCode()}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match=r"code.pth: .*holds more than plain data"):
        ckpt.load_checkpoint(tmp_path / "code.pth")


def test_save_removes_stale_temporaries_of_that_checkpoint_only(tmp_path):
    stale = [".last.pth.ab12cd_9.tmp", ".last.pth.zz000000.tmp"]
    kept = [".best.pth.ab12cd_9.tmp", ".last.pth.short.tmp", "last.pth.ab12cd_9.tmp", "notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    ckpt.save_checkpoint(tmp_path / "last.pth", {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["last.pth"])
    assert ckpt.load_checkpoint(tmp_path / "last.pth") == {"epoch": 3}


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_full_disk_is_reported_with_the_path(tmp_path, monkeypatch, error):
    def full(obj, f):
        f.write(b"partial")
        raise error
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left writing .*run.last\.pth") as err:
        ckpt.save_checkpoint(tmp_path / "run" / "last.pth", {"epoch": 1})
    assert err.value.errno == errno.ENOSPC
    assert list((tmp_path / "run").iterdir()) == []                     # the temporary file is removed


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_export_of_a_plain_torchvision_state_dict_infers_the_arch(arch, tmp_path, capsys):
    from pretrain.export import main as export_main
    net = getattr(torchvision.models, arch)()
    torch.save(net.state_dict(), tmp_path / "backbone_torchvision.pth")   # no "config": arch from the tensors
    export_main(["--checkpoint", str(tmp_path / "backbone_torchvision.pth"), "--out", str(tmp_path / "out")])
    ours = ckpt.load_checkpoint(tmp_path / "out" / "backbone.pth")
    assert ours["arch"] == arch and ckpt.backbone_arch(ckpt.backbone_state_dict(ours)) == arch
    again = getattr(torchvision.models, arch)()
    again.fc = nn.Identity()
    again.load_state_dict(ckpt.load_checkpoint(tmp_path / "out" / "backbone_torchvision.pth"), strict=True)
    assert torch.equal(again.layer4[-1].conv1.weight, net.layer4[-1].conv1.weight)
    sd = net.state_dict()
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"][:, :3]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=rf"broken.pth: not a {arch} backbone.*layer1.0.conv1.weight"):
        export_main(["--checkpoint", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "out")])
