"""Config loading: dotted overrides, type checks, close-match errors, resolved config on disk."""
import pytest
import yaml

from common.config import Config, ConfigError, cli, load_config, save_config

BASE = """
out: runs/x
model:
  arch: resnet50
  init: scratch
optim:
  lr: 0.1
  epochs: 10
  betas: [0.9, 0.999]
  amp: false
data:
  fraction: null
"""


@pytest.fixture
def cfg_path(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return str(path)


def test_overrides_are_typed(cfg_path):
    cfg = load_config(cfg_path, ["optim.lr=1e-4", "optim.epochs=3", "optim.amp=true",
                                 "model.init=/tmp/a.pth", "optim.betas=[0.5, 0.6]", "data.fraction=0.02"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 3 and cfg.optim.amp is True
    assert cfg.model.init == "/tmp/a.pth"
    assert cfg.optim.betas == [0.5, 0.6]
    assert cfg.data.fraction == 0.02


def test_int_is_accepted_for_float_but_not_the_reverse(cfg_path):
    assert load_config(cfg_path, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match="expected int"):
        load_config(cfg_path, ["optim.epochs=1.5"])
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(cfg_path, ["optim.amp=1"])
    with pytest.raises(ConfigError, match="expected str"):
        load_config(cfg_path, ["model.arch=50"])


def test_unknown_key_names_close_matches(cfg_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*optim\.lr"):
        load_config(cfg_path, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(cfg_path, ["nothing.like.it=1"])
    with pytest.raises(ConfigError, match="names a section"):
        load_config(cfg_path, ["optim=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg_path, ["optim.lr"])


def test_attribute_access_and_round_trip(cfg_path, tmp_path):
    cfg = load_config(cfg_path, ["optim.lr=0.5"])
    assert isinstance(cfg.optim, Config) and cfg["optim"]["lr"] == cfg.optim.lr
    with pytest.raises(AttributeError, match="nope"):
        cfg.nope
    path = save_config(cfg, str(tmp_path / "run"))
    on_disk = yaml.safe_load(open(path))
    assert on_disk == cfg.to_dict() and type(on_disk["optim"]) is dict
    assert load_config(path).to_dict() == cfg.to_dict()


def test_cli_parses_config_extras_and_overrides(cfg_path):
    cfg, args = cli("t", extra_args=[("--checkpoint", {"required": True})],
                    argv=["--config", cfg_path, "--checkpoint", "c.pth", "optim.epochs=2"])
    assert args.checkpoint == "c.pth" and cfg.optim.epochs == 2
    cfg, args = cli("t", extra_args=[("--checkpoint", {"required": True})],
                    argv=["--config", cfg_path, "optim.epochs=3", "--checkpoint", "d.pth", "optim.lr=0.5"])
    assert args.checkpoint == "d.pth" and cfg.optim.epochs == 3 and cfg.optim.lr == 0.5
    with pytest.raises(SystemExit):
        cli("t", argv=["--config", cfg_path, "optim.epoch=2"])


def test_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))


def test_exponent_floats_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nwd: 5.0e-2\nname: 1e4x\n")
    cfg = load_config(str(path), ["wd=2E-3"])
    assert cfg.lr == 1e-4 and cfg.wd == 2e-3 and cfg.name == "1e4x"


def test_only_true_and_false_are_booleans(cfg_path):
    cfg = load_config(cfg_path, ["model.init=off", "optim.amp=True"])
    assert cfg.model.init == "off" and cfg.optim.amp is True
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(cfg_path, ["optim.amp=yes"])


def test_attribute_assignment_writes_the_key_or_raises(cfg_path):
    cfg = load_config(cfg_path)
    cfg.out = "runs/b"
    cfg.optim.lr = 0.25
    cfg.model = {"arch": "resnet18", "init": "scratch"}
    assert cfg.to_dict()["out"] == "runs/b" and cfg.to_dict()["optim"]["lr"] == 0.25
    assert isinstance(cfg.model, Config) and cfg.model.arch == "resnet18"   # a section stays a Config
    with pytest.raises(AttributeError, match="'outt'"):
        cfg.outt = "c"
    with pytest.raises(AttributeError, match="'lrr'"):
        cfg.optim.lrr = 1.0
    assert "outt" not in cfg and "lrr" not in cfg.optim and cfg.to_dict()["out"] == "runs/b"


def test_from_dict_wraps_every_section():
    cfg = Config.from_dict({"model": {"arch": "resnet18", "head": {"dim": 8}}, "seed": 3, "tags": [1, {"a": 2}]})
    assert type(cfg.model) is Config and type(cfg.model.head) is Config and cfg.model.head.dim == 8
    assert cfg.seed == 3 and cfg.to_dict() == {"model": {"arch": "resnet18", "head": {"dim": 8}}, "seed": 3,
                                               "tags": [1, {"a": 2}]}
    assert Config.from_dict({}) == {}


def test_cli_with_optional_config(cfg_path):
    cfg, args = cli("t", extra_args=[("--checkpoint", {"required": True})], argv=["--checkpoint", "c.pth"],
                    config_required=False)
    assert cfg is None and args.checkpoint == "c.pth"
    with pytest.raises(SystemExit):                       # overrides without a config to apply them to
        cli("t", extra_args=[("--checkpoint", {})], argv=["--checkpoint", "c.pth", "optim.lr=1"],
            config_required=False)
    cfg, _ = cli("t", argv=["optim.lr=0.5", "--config", cfg_path], config_required=False)
    assert cfg.optim.lr == 0.5
