"""The model-family registry: the only place that turns a name, a config or a checkpoint folder into a family.

- a training config names its family by `model.arch`: a built-in key, a key registered with
  `register_family`, or an import path `package.module:ATTR` of a family that lives outside higgs-ds;
- a checkpoint folder by its config.json: the `higgs_ds_family` key written on export, else the first
  family whose `reads_checkpoint` accepts it (released folders carry no key);
- a model config by its class (`family_for_config`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

from higgs_ds.errors import ConfigError
from higgs_ds.models.family import ModelFamily

# Built-in families, imported on first use (keys appear in recipes and run folders: they never change).
_BUILTIN = {"higgs_v2_dualffn": "higgs_ds.models.higgs_v2", "higgs_tts3": "higgs_ds.models.higgs_tts3"}
DEFAULT_FAMILY = "higgs_v2_dualffn"
FAMILY_KEY = "higgs_ds_family"  # config.json key naming the family of an exported folder
_REGISTRY: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Make `family` known under `family.name` (a later registration of the same name replaces it)."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_family expects a ModelFamily, got {type(family).__name__}")
    _REGISTRY[family.name] = family
    return family


def registered_families() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTRY})


def get_family(name: str) -> ModelFamily:
    """The family registered as `name`, or the one an import path `package.module:ATTR` names (registered
    under that path, so run metadata records it and every rank, export and generate find it again)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        return register_family(importlib.import_module(_BUILTIN[name]).FAMILY)
    if ":" not in name:
        raise ConfigError(f"unknown model family {name!r}", where="model.arch",
                          fix=f"use one of {registered_families()}, or `package.module:FAMILY` for a family of "
                              f"your own")
    module_name, _, attr = name.partition(":")
    try:
        family = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import model family {name!r} ({type(exc).__name__}: {exc})", where="model.arch",
                          fix="make the module importable on every rank (PYTHONPATH) and name its ModelFamily",
                          ) from None
    if not isinstance(family, ModelFamily):
        raise ConfigError(f"{name} is a {type(family).__name__}, not a ModelFamily", where="model.arch")
    return register_family(dataclasses.replace(family, name=name))


def family_for_config(config) -> ModelFamily:
    """The family whose config class `config` is (the most recently registered one, if several)."""
    for name in _BUILTIN:
        get_family(name)
    for family in reversed(list(_REGISTRY.values())):
        if isinstance(config, family.config_cls):
            return family
    raise TypeError(f"{type(config).__name__} is the config of no registered model family "
                    f"({registered_families()})")


def family_of_config_dict(config: dict, where: str) -> ModelFamily:
    """The family of a checkpoint's config.json dict: its recorded key, else the first family that reads it."""
    if FAMILY_KEY in config:
        return get_family(str(config[FAMILY_KEY]))
    for name in [*_BUILTIN, *_REGISTRY]:
        family = get_family(name)
        if family.reads_checkpoint(config):
            return family
    raise ConfigError(f"{where}: no model family reads this checkpoint (model_type={config.get('model_type')!r})",
                      where=where, fix=f"the families known here are {registered_families()}")


def family_of(directory: str | Path) -> ModelFamily:
    """The family of a checkpoint folder (exported, released or a plain language model to start from)."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json in {directory}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON ({exc})", where=str(path)) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object", where=str(path))
    return family_of_config_dict(config, str(path))
