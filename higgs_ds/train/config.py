"""Typed training configuration: a YAML recipe plus `key.sub=value` command-line overrides.

Every knob lives here once. The DeepSpeed JSON only carries what is DeepSpeed's own (ZeRO stage,
offload, bucket sizes); batch sizes and precision are filled in from this config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from higgs_ds.data.loader import LoaderConfig
from higgs_ds.errors import quote
from higgs_ds.models import DEFAULT_FAMILY, get_family
from higgs_ds.ops import OpsBackend
from higgs_ds.train.audio_eval import AudioEvalConfig
from higgs_ds.train.lora import LoraConfig
from higgs_ds.train.preference.config import DpoConfig, GrpoConfig
from higgs_ds.train.tensorboard_log import tensorboard_available
from higgs_ds.train.yaml_values import load_yaml

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    init: str | None = None  # a local checkpoint folder of the family below (any layout it reads)
    # The model family: a registered name (`registered_families()`) or `package.module:FAMILY` for one of your
    # own. `init` and the tokenizer must be of this family (checked before the run starts).
    arch: str = DEFAULT_FAMILY
    # a fresh model when init is None: sizes of the tiny demo model
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # codebooks, codebook size and stream ids come from the shards' audio spec
    # Train on codes whose audio spec differs from the one `init` was trained on (another codec): the model
    # must then re-learn its audio side. Off: such a mismatch stops the run at start-up.
    allow_audio_spec_change: bool = False

    def __post_init__(self):
        if self.init is not None and not Path(self.init).is_dir():
            raise ValueError(f"model.init={self.init!r} is not a local checkpoint directory")
        get_family(self.arch)  # unknown name or unimportable path: a ConfigError naming the choices


@dataclass(frozen=True)
class DataConfig(LoaderConfig):
    """The training loader's settings (`shards`, `num_workers`, `stream.*`, ...) plus the tokenizer and the
    held-out split, one level under `data.`: `data.shards=...`, `data.stream.max_tokens=16384`."""

    tokenizer: str = "data/demo/tokenizer"  # a transformers tokenizer dir with the Higgs special tokens
    eval_shards: str | None = "data/demo/eval"  # evaluated with the training stream settings, unshuffled


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError("optim: lr must be > 0, min_lr_ratio in [0, 1], warmup_steps >= 0")
        self.betas = tuple(self.betas)


@dataclass
class LossConfig:
    text_weight: float = 1.0
    audio_weight: float = 1.0
    codebook_weights: list[float] | None = None  # None: 1/K each

    def __post_init__(self):
        weights = [self.text_weight, self.audio_weight, *(self.codebook_weights or [])]
        if any(w < 0 for w in weights):
            raise ValueError(f"loss weights must be >= 0, got {quote(weights)}")


def default_loggers() -> list[str]:
    return ["wandb", "tensorboard"] if tensorboard_available() else ["wandb"]


@dataclass
class TrainConfig:
    run_dir: str = "runs/demo"
    steps: int = 300  # the run's fixed budget (also the length of the LR schedule)
    stop_at: int | None = None  # end this job early at that step (checkpointed), e.g. before a time limit
    grad_accum: int = 1
    seed: int = 1234
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    activation_checkpointing: bool = False
    freeze: Literal["none", "audio_only"] = "none"  # audio_only: audio MLPs, norms, codebook embeddings, head
    ops_backend: OpsBackend = "auto"  # auto: Triton on CUDA after a self-check, else PyTorch
    log_every: int = 10
    predict_every: int = 50
    eval_every: int = 100
    save_every: int = 100
    keep_last: int = 2
    resume: str | None = None  # None | "auto" | a checkpoint tag
    max_nonfinite: int = 5  # stop after this many non-finite micro-batches in a row
    dist_timeout_s: int = 600  # a rank waiting longer than this on a dead peer errors out instead of hanging
    peak_tflops: float | None = None  # per device, for MFU; None = no MFU
    wandb_project: str | None = "higgs-ds"  # None: no wandb, whatever `loggers` says
    # metric sinks besides metrics.jsonl (rank 0); default: wandb, plus tensorboard when it is installed
    loggers: list[Literal["wandb", "tensorboard"]] = field(default_factory=default_loggers)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(shards="data/demo/train"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    audio_eval: AudioEvalConfig = field(default_factory=AudioEvalConfig)  # listening eval (generation)
    lora: LoraConfig = field(default_factory=LoraConfig)  # LoRA fine-tuning (off by default)
    # What the step optimises (docs/preference.md): cross-entropy on data.shards; DPO on pair shards; GRPO
    # online, sampling from data.shards' prompts (their target audio unused).
    objective: Literal["sft", "dpo", "grpo"] = "sft"
    dpo: DpoConfig = field(default_factory=DpoConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    # grpo: reward name (a built-in or "package.module:function") -> weight; the weighted mean is the reward
    rewards: dict[str, float] = field(default_factory=dict)
    # the reference policy of dpo/grpo under full fine-tuning: a checkpoint folder, None = model.init (or the
    # fresh initialisation); under LoRA the reference is the model with its adapters disabled
    reference: str | None = None

    def __post_init__(self):
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError("steps and grad_accum must be >= 1")
        check_choices(self)
        if "tensorboard" in self.loggers and not tensorboard_available():
            raise ValueError("loggers: tensorboard is not installed (pip install tensorboard), or drop it from loggers")
        if self.lora.enabled and self.model.init is None:  # the base stays frozen: it would stay random
            raise ValueError("lora.enabled without model.init: LoRA adapts a trained model, and the base here "
                             "would be a frozen random one; set model.init=<checkpoint folder>, or drop "
                             "lora.enabled to train a fresh model in full")
        if self.lora.enabled and self.freeze != "none":
            raise ValueError(f"lora.enabled with freeze={self.freeze!r}: LoRA chooses what trains (lora.targets, "
                             f"lora.train_audio_*); set freeze=none")
        if self.lora.targets is not None:
            self.lora.groups(get_family(self.model.arch))  # a group the family lacks is named here
        self._check_objective()
        positive = {"keep_last": self.keep_last, "log_every": self.log_every, "save_every": self.save_every,
                    "max_nonfinite": self.max_nonfinite, "dist_timeout_s": self.dist_timeout_s}
        non_negative = {"predict_every": self.predict_every, "eval_every": self.eval_every}
        bad = [k for k, v in positive.items() if v < 1] + [k for k, v in non_negative.items() if v < 0]
        if self.stop_at is not None and not self.stop_at >= 1:
            bad.append("stop_at")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            bad.append("peak_tflops")
        if bad:
            raise ValueError(f"invalid value for {', '.join(bad)} (intervals must be >= 1, or >= 0 to disable "
                             f"predictions/eval; stop_at and peak_tflops positive)")

    def _check_objective(self) -> None:
        if self.objective == "grpo" and not self.rewards:
            raise ValueError("objective=grpo needs rewards: e.g. rewards={dnsmos: 1.0, stop: 0.5}")
        if self.objective != "grpo" and self.rewards:
            raise ValueError(f"rewards are read by objective=grpo only (objective={self.objective}); drop them")
        bad = {k: w for k, w in self.rewards.items() if not math.isfinite(w) or w <= 0}
        if bad:
            raise ValueError(f"rewards: weights must be positive numbers, got {bad}")
        if self.objective == "grpo" and self.grad_accum != 1:
            raise ValueError("objective=grpo samples its own batch each step: set grad_accum=1 (grpo.prompts and "
                             "grpo.group_size size the step)")
        if self.objective != "sft" and self.lora.enabled and (self.lora.train_audio_embeddings or
                                                              self.lora.train_audio_head):
            raise ValueError(f"objective={self.objective} under LoRA takes the model with its adapters disabled as "
                             f"the reference; modules trained in full (lora.train_audio_*) would move the reference "
                             f"too: turn them off")
        if self.reference is not None:
            if self.objective == "sft" or self.lora.enabled:
                raise ValueError("reference is the frozen policy of dpo/grpo under full fine-tuning; under LoRA the "
                                 "reference is the model with its adapters disabled: drop reference")
            if not Path(self.reference).is_dir():
                raise ValueError(f"reference={self.reference!r} is not a local checkpoint directory")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: dict[str, Any], where: str, base=None):
    """Build dataclass `cls` from a nested dict, starting from `base` (an instance) or the defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + str(k)[:60] for k in unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        sub = hints[name]
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            current = getattr(base, name) if base is not None else _default(fields[name])
            kwargs[name] = _build(sub, value, f"{where}{name}.", current)
        else:
            kwargs[name] = _typed(value, sub, where + name)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ checks: say which group of keys
        raise ValueError(f"{where.rstrip('.')}: {exc}" if where else str(exc)) from None


def _typed(value, hint, key: str):
    """`value` checked against the field's type hint; an error names the key."""
    if isinstance(value, str) and float in typing.get_args(hint) + (hint,):
        try:
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            raise ValueError(f"{key}={quote(value)}: expected a number") from None
    if isinstance(value, int | float) and not isinstance(value, bool) and not _conforms(value, hint) \
            and _conforms(str(value), hint):
        value = str(value)  # run_dir=2024, resume=... : YAML read a number where a string is meant
    if not _conforms(value, hint):
        plain = typing.get_origin(hint) is None and isinstance(hint, type)
        wanted = _choices(hint) or ("a group of keys" if dataclasses.is_dataclass(hint) else hint.__name__ if plain
                                    else str(hint))
        raise ValueError(f"{key}={quote(value)}: expected {wanted}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: must be finite")
    return value


def _choices(hint) -> str | None:
    """"one of 'a', 'b'" for a `Literal` hint (or "a list of ..." for a list of them); None otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list and args and (inner := _choices(args[0])):
        return "a list, each " + inner
    if origin in (typing.Union, types.UnionType):
        inner = [_choices(a) for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0]:
            return inner[0] + (" or None" if type(None) in args else "")
    return None


def check_choices(obj) -> None:
    """Every `Literal` field of dataclass `obj` holds one of its choices, also when `obj` is built in code."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _choices(hints[f.name]) and not _conforms(value, hints[f.name]):
            raise ValueError(f"{f.name}={quote(value)}: expected {_choices(hints[f.name])}")


def _conforms(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args, strict=True))
        return all(_conforms(v, args[0]) for v in value) if args else True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None) or hint is None:
        return value is None
    return isinstance(value, hint) if isinstance(hint, type) else True


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _set_path(tree: dict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise ValueError(f"{dotted}: {p} is a single setting, not a group of keys")
    try:
        tree[leaf] = load_yaml(raw)  # "3" -> 3, "1e-4" -> 1e-4, "null" -> None, "[1,2]" -> list
    except yaml.YAMLError as exc:
        raise ValueError(f"{dotted}={quote(raw)}: not a YAML value ({getattr(exc, 'problem', exc)})") from None
    except ValueError as exc:
        raise ValueError(f"{dotted}={quote(raw)}: {exc}") from None


def _deep_merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _migrate(tree: dict, old_wins: bool = False) -> None:
    """Move `data.train.*` (the nesting before 0.2; recipes and overrides alike) to `data.*`, warning once
    per old key. In a recipe the new spelling wins where both are given; an override always wins."""
    data = tree.get("data")
    if not isinstance(data, dict) or "train" not in data:
        return
    old = data.pop("train")
    if not isinstance(old, dict):
        raise ValueError("data.train: renamed; its keys now sit directly under data (e.g. data.shards)")
    for key in old:
        log.warning("config key data.train.%s is deprecated: use data.%s", key, key)
    if old_wins:
        _deep_merge(data, old)
    else:
        moved = dict(old)
        _deep_merge(moved, data)
        tree["data"] = moved


def _read_recipe(path: Path) -> dict[str, Any]:
    """A YAML recipe: a mapping of keys (an empty file is an empty recipe)."""
    if not path.is_file():
        raise ValueError(f"recipe {path} not found (--config): give a YAML file such as recipes/demo.yaml")
    try:
        tree = load_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"recipe {path} is not YAML ({' '.join(str(exc).split())[:200]}): "
                         f"start from recipes/demo.yaml") from None
    except ValueError as exc:  # a key twice, an alias bomb
        raise ValueError(f"recipe {path} cannot be read: {exc}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ValueError(f"recipe {path} is a YAML {type(tree).__name__}, not a mapping of keys: "
                         f"write `key: value` lines, as in recipes/demo.yaml")
    return tree or {}


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML recipe (optional) + overrides such as `steps=20` or `optim.lr=3e-4`."""
    tree: dict[str, Any] = {}
    if path:
        tree = _read_recipe(Path(path))
    _migrate(tree)
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ValueError(f"override {quote(item)} must look like key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        _set_path(tree, key, raw)
        _migrate(tree, old_wins=True)
    return _build(TrainConfig, tree, "")
