"""LoRA fine-tuning through `peft`: low-rank adapters on linear groups the model's family names
(`ModelFamily.lora_groups`: attention, MLPs, ...), and the audio embedding / head trained in full on request.

The model knows nothing of peft. Training calls `apply_lora` once the model is built (and loaded):
peft wraps the targeted linears in place (`q_proj` -> `q_proj.base_layer` + `q_proj.lora_{A,B}.default`)
and only the adapters, plus the optionally fully trained audio embeddings / audio head, require grad.
Under ZeRO-3 the adapter weights are created after `zero.Init`; `deepspeed.initialize` converts such
parameters itself (broadcast from rank 0, then partitioned), so nothing here depends on the ZeRO stage.

Export reads a run's consolidated state dict (the names above) and either merges the adapters into
plain weights (`merged_state_dict`) or writes the adapter alone in peft's format (`save_adapter`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import peft
import torch
from safetensors.torch import save_file
from torch import nn

from higgs_ds.errors import ConfigError, quote
from higgs_ds.models import ModelFamily, family_for_config

log = logging.getLogger(__name__)

ADAPTER = "default"  # peft's adapter name; it is part of the parameter names during training
ADAPTER_CONFIG_NAME = "higgs_lora.json"  # our LoraConfig next to peft's adapter_config.json
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # what peft's PeftModel puts before module names in adapter files


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # adapter output is scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input
    # groups of linears to adapt (the family's `lora_groups`, e.g. attention, text_mlp, audio_mlp); None: all
    targets: list[str] | None = None
    train_audio_embeddings: bool = False  # train the audio embedding in full
    train_audio_head: bool = False  # train the audio head in full

    def __post_init__(self):
        if self.targets is None:
            return self._check_sizes()
        self.targets = list(self.targets)
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets={quote(self.targets)}: name one or more groups, each once")
        self._check_sizes()

    def _check_sizes(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora: rank must be >= 1, alpha > 0 and dropout in [0, 1) (got rank={self.rank}, "
                             f"alpha={self.alpha}, dropout={self.dropout})")

    @classmethod
    def from_run_config(cls, train: dict) -> LoraConfig | None:
        """The LoRA settings recorded in a run's config (`TrainConfig.to_dict()`), None if LoRA was off."""
        d = train.get("lora") or {}
        return cls(**d) if d.get("enabled") else None

    def groups(self, family: ModelFamily, strict: bool = True) -> list[str]:
        """The target groups on `family`. strict: a group the family lacks is a ConfigError; otherwise (a run's
        recorded settings, whose regex matched nothing there) it is left out."""
        wanted = list(family.lora_groups) if self.targets is None else self.targets
        unknown = [t for t in wanted if t not in family.lora_groups]
        if unknown and strict:
            raise ConfigError(f"lora.targets: {unknown} is no LoRA group of model family {family.name}",
                              where="lora.targets", fix=f"choose from {list(family.lora_groups)} (or leave it unset "
                                                        f"for all of them)")
        return [t for t in wanted if t in family.lora_groups]

    def fully_trained_modules(self, family: ModelFamily) -> list[str]:
        """The modules trained in full (not adapted), from the two flags and the family's names for them."""
        flags = [flag for flag in ("train_audio_embeddings", "train_audio_head") if getattr(self, flag)]
        return sorted({m for flag in flags for m in family.lora_fully_trained.get(flag, ())})

    def peft_config(self, family: ModelFamily, with_fully_trained: bool = False,
                    strict: bool = True) -> peft.LoraConfig:
        """peft's config. Training leaves the fully trained modules out (they train in place, without
        peft's copy); the exported adapter lists them as `modules_to_save`, which is how peft stores them."""
        groups = "|".join(family.lora_groups[t] for t in self.groups(family, strict))
        return peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                               target_modules=rf".*layers\.\d+\.({groups})",
                               modules_to_save=self.fully_trained_modules(family) if with_fully_trained else None)


def is_adapter_param(name: str) -> bool:
    return f".{ADAPTER}." in name and (".lora_A." in name or ".lora_B." in name)


def apply_lora(model, cfg: LoraConfig, family: ModelFamily | None = None) -> None:
    """Inject the adapters in place; afterwards only they and the fully trained modules require grad."""
    family = family or family_for_config(model.config)
    peft.inject_adapter_in_model(cfg.peft_config(family), model, adapter_name=ADAPTER)
    full = tuple(f"{m}." for m in cfg.fully_trained_modules(family))
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_param(name) or name.startswith(full))
    n_train = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    n_all = sum(_numel(p) for p in model.parameters())
    log.info("LoRA rank %d on %s%s: %.3fM of %.2fM parameters trainable (%.2f%%)", cfg.rank,
             "+".join(cfg.groups(family)), "".join(f", {m} in full" for m in cfg.fully_trained_modules(family)),
             n_train / 1e6, n_all / 1e6,
             100 * n_train / n_all)


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 partitions report their full size here


def merged_state_dict(state: dict[str, torch.Tensor], config, cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """A trained run's state dict with the adapters merged into their base weights (plain model names).

    The model is built on the meta device and takes the given tensors as its weights, so only one copy
    of the weights is held; the base weights of adapted linears are updated in place.
    """
    family = family_for_config(config)
    with torch.device("meta"):
        model = family.build_model(config)
    tuner = peft.LoraModel(model, cfg.peft_config(family, strict=False), ADAPTER, low_cpu_mem_usage=True)
    _load_exactly(model, state)
    with torch.no_grad():
        merged = tuner.merge_and_unload()
    return merged.state_dict()


def adapted_model(state: dict[str, torch.Tensor], config, cfg: LoraConfig):
    """The model as trained (adapters unmerged) from a run's consolidated state dict, in eval mode."""
    family = family_for_config(config)
    model = family.build_model(config)
    peft.inject_adapter_in_model(cfg.peft_config(family, strict=False), model, adapter_name=ADAPTER)
    _load_exactly(model, state)
    return model.eval()


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KeyError(f"the checkpoint does not match the LoRA model it records: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    model.load_state_dict(state, assign=True)


def adapter_state_dict(state: dict[str, torch.Tensor], cfg: LoraConfig, family: ModelFamily) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's file format: `base_model.model.<module>.lora_A.weight`, and the
    fully trained modules' weights under their own names."""
    full = tuple(f"{m}." for m in cfg.fully_trained_modules(family))
    out = {}
    for name, t in state.items():
        if is_adapter_param(name):
            out[_PEFT_PREFIX + name.replace(f".{ADAPTER}.", ".")] = t
        elif name.startswith(full):
            out[_PEFT_PREFIX + name] = t
    if not any(is_adapter_param(n) for n in state):
        raise KeyError("the checkpoint holds no LoRA adapter weights although its config says LoRA was used")
    return out


def save_adapter(state: dict[str, torch.Tensor], cfg: LoraConfig, family: ModelFamily, out: str | Path,
                 base_model: str | None = None) -> Path:
    """Write the adapter alone: peft's `adapter_config.json` + `adapter_model.safetensors` (loads with
    `peft.PeftModel.from_pretrained(base, out)`), and our LoraConfig (which groups) in higgs_lora.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pcfg = cfg.peft_config(family, with_fully_trained=True, strict=False)
    pcfg.base_model_name_or_path = base_model
    pcfg.save_pretrained(str(out))
    tensors = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(state, cfg, family).items()}
    save_file(tensors, out / _ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (out / ADAPTER_CONFIG_NAME).write_text(json.dumps({**asdict(cfg), "base_model": base_model}, indent=2) + "\n")
    return out
