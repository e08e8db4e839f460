"""Run configuration (DESIGN.md "Runs, configs, outputs"): YAML plus dotted ``key=value`` overrides.

A config is a nested mapping loaded from one YAML file. Command-line overrides address a leaf by
its dotted path (``optim.lr=1e-4``); the value is parsed as YAML and must have the type of the
value it replaces (an int may replace a float; ``null`` leaves are free). An unknown key is an
error that names the closest existing keys, so a typo never silently trains the default.
"""
import argparse
import difflib
import os
import re
import subprocess

import yaml

from common.files import write_text_atomic


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``1e-4`` is a float and only true/false are booleans
    (YAML 1.1 reads ``1e-4`` as a string and ``off``/``yes`` as booleans)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text):
    """Parse YAML text with floats read as YAML 1.2 does."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or an override that cannot be applied."""


class Config(dict):
    """A dict whose keys can also be read and assigned as attributes (``cfg.optim.lr``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name, value):
        """``cfg.out = "b"`` writes the existing key ``out``; an unknown key raises AttributeError."""
        if name not in self:
            raise AttributeError(f"config has no key {name!r} (known: {sorted(self)})")
        self[name] = _wrap(value)

    @classmethod
    def from_dict(cls, tree):
        """A nested mapping (e.g. the config saved in a checkpoint) as a Config, sections included."""
        return _wrap(dict(tree))

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def _wrap(value):
    if isinstance(value, dict):
        return Config({k: _wrap(v) for k, v in value.items()})
    return value


def _leaf_paths(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


def _coerce(path, old, new):
    """Type-check an override ``new`` against the value ``old`` it replaces."""
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(new)
    elif type(old) is type(new):
        return new
    raise ConfigError(f"override {path}={new!r}: expected {type(old).__name__} like the config's "
                      f"{old!r}, got {type(new).__name__}")


def apply_override(tree, item):
    """Apply one ``dotted.key=value`` string to the nested dict ``tree`` in place."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    path, text = item.split("=", 1)
    keys = path.split(".")
    node = tree
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            known = list(_leaf_paths(tree))
            close = difflib.get_close_matches(path, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint}")
        if depth < len(keys) - 1:
            node = node[key]
    if isinstance(node[keys[-1]], dict):
        raise ConfigError(f"override {path!r} names a section, not a value")
    node[keys[-1]] = _coerce(path, node[keys[-1]], parse_yaml(text) if text else "")


def load_config(path, overrides=()):
    """Read the YAML file at ``path`` and apply ``overrides`` (``key=value`` strings)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        try:
            tree = parse_yaml(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        apply_override(tree, item)
    return _wrap(tree)


def git_sha():
    """The repository's commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_config(cfg, run_dir):
    """Write the resolved config to ``run_dir/config.yaml`` (keys sorted) and return the path."""
    path = os.path.join(run_dir, "config.yaml")
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict() if isinstance(cfg, Config) else cfg, sort_keys=True))
    return path


def cli(description, extra_args=(), argv=None, config_required=True):
    """Parse ``--config PATH key=value ...`` (plus ``extra_args``) and return ``(cfg, args)``.

    ``extra_args`` is a sequence of ``(flags, kwargs)`` passed to ``ArgumentParser.add_argument``.
    With ``config_required=False`` a call without ``--config`` (and so without overrides) gives
    ``cfg=None``, for entry points that fall back to the config saved in a checkpoint.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=config_required, help="YAML config file")
    for flags, kwargs in extra_args:
        flags = (flags,) if isinstance(flags, str) else tuple(flags)
        parser.add_argument(*flags, **kwargs)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=0.1")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after options
    if args.config is None:
        if args.overrides:
            parser.error("key=value overrides need --config")
        return None, args
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    return cfg, args
