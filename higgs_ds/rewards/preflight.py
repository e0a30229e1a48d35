"""`check_rewards`: what a reward set needs, checked from files alone (no model loaded, no user module run),
so that a missing Whisper folder or a mistyped plug-in stops a command before any process group starts."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from higgs_ds.errors import ConfigError
from higgs_ds.rewards.base import BUILTINS

# built-in -> the packages its model needs (found with importlib.util.find_spec, not imported)
PACKAGES = {"cer": ("transformers", "jiwer"), "sim": ("resemblyzer",), "dnsmos": ("speechmos", "onnxruntime")}


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or an empty name
        return False


def _model_folder(path, name: str, key: str, what: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{path} is not a local {what} folder (no config.json)", where=f"rewards.{name}",
                          fix=f"copy the model there first (context key {key!r}); nothing is downloaded")


def _check_builtin(name: str, context: dict) -> None:
    for package in PACKAGES.get(name, ()):
        if not _findable(package):
            raise ConfigError(f"the {name} reward needs the {package} package, which is not installed",
                              where=f"rewards.{name}", fix="install requirements.txt (make setup)")
    if name == "cer":
        if not context.get("whisper"):
            raise ConfigError("the cer reward needs a local Whisper folder", where="rewards.cer",
                              fix="give one (--whisper DIR, or the reward context's whisper key)")
        _model_folder(context["whisper"], name, "whisper", "Whisper")
    if name == "sim" and context.get("wavlm"):
        _model_folder(context["wavlm"], name, "wavlm", "WavLMForXVector")
    rate = context.get("chars_per_second")
    if name == "duration" and rate is not None and not (isinstance(rate, (int, float)) and math.isfinite(rate)
                                                         and rate > 0):
        raise ConfigError(f"chars_per_second {rate!r} must be a positive number", where="rewards.duration",
                          fix="fit it on training shards (higgs_ds.rewards.fit_chars_per_second)")


def _check_plugin(spec: str) -> None:
    module, _, attr = spec.partition(":")
    if not module or not attr or not attr.isidentifier():
        raise ConfigError(f"reward {spec!r} is neither a built-in ({', '.join(sorted(BUILTINS))}) nor "
                          "'package.module:function'", where="rewards", fix="name a built-in or a plug-in")
    if not _findable(module):
        raise ConfigError(f"reward {spec!r}: module {module!r} is not importable here", where="rewards",
                          fix="install it, or put its folder on PYTHONPATH on every rank")


def check_rewards(weights: dict[str, float], context: dict | None = None) -> None:
    """Raise one ConfigError for the first problem: no rewards, a weight that is not a positive number, a
    name neither built-in nor `package.module:function`, a plug-in module that cannot be found, or a
    built-in whose package or model folder is missing. The duration rate is checked only when the context
    already holds it (a run fits it on its shards after preflight)."""
    context = context or {}
    if not weights:
        raise ConfigError("no rewards given", where="rewards", fix="e.g. rewards: {dnsmos: 1.0, stop: 0.5}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight <= 0:
            raise ConfigError(f"reward weight {weight!r} must be a positive number", where=f"rewards.{name}")
        if name in BUILTINS:
            _check_builtin(name, context)
        else:
            _check_plugin(name)
