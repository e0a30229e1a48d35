"""LoRA fine-tuning through `peft`: low-rank adapters on chosen linear groups of the DualFFN model.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import peft
import torch
from safetensors.torch import save_file
from torch import nn

from higgs_ds.model.config import HiggsAudioConfig
from higgs_ds.model.modeling import HiggsAudioModel
from higgs_ds.model.tts3 import model_for

log = logging.getLogger(__name__)

ADAPTER = "default"  # peft's adapter name; it is part of the parameter names during training
# group name -> the linears it adapts (module names relative to `layers.N.`)
TARGET_GROUPS = {
    "attention": r"self_attn\.(q|k|v|o)_proj",
    "text_mlp": r"mlp\.(gate|up|down)_proj",
    "audio_mlp": r"audio_mlp\.(gate|up|down)_proj",
}
# LoraConfig flag -> the module it trains in full (not adapted)
FULLY_TRAINED = {
    "train_audio_embeddings": "audio_codebook_embeddings",
    "train_audio_head": "audio_decoder_proj.audio_lm_head",
}
TIED_AUDIO_TABLE = "audio_table"  # Higgs TTS 3: embedding and head are one table, trained in full by either flag
ADAPTER_CONFIG_NAME = "higgs_lora.json"  # our LoraConfig next to peft's adapter_config.json
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # what peft's PeftModel puts before module names in adapter files


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # adapter output is scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input
    targets: list[str] = field(default_factory=lambda: ["attention", "text_mlp", "audio_mlp"])
    train_audio_embeddings: bool = False  # train audio_codebook_embeddings in full
    train_audio_head: bool = False  # train audio_decoder_proj.audio_lm_head in full

    def __post_init__(self):
        self.targets = list(self.targets)
        unknown = [t for t in self.targets if t not in TARGET_GROUPS]
        if unknown:
            raise ValueError(f"lora.targets: unknown group(s) {unknown}; choose from {list(TARGET_GROUPS)}")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets={self.targets}: name one or more groups, each once")
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora: rank must be >= 1, alpha > 0 and dropout in [0, 1) (got rank={self.rank}, "
                             f"alpha={self.alpha}, dropout={self.dropout})")

    @classmethod
    def from_run_config(cls, train: dict) -> LoraConfig | None:
        """The LoRA settings recorded in a run's config (`TrainConfig.to_dict()`), None if LoRA was off."""
        d = train.get("lora") or {}
        return cls(**d) if d.get("enabled") else None

    def fully_trained_modules(self, tied_audio_table: bool = False) -> list[str]:
        if tied_audio_table:
            return [TIED_AUDIO_TABLE] if self.train_audio_embeddings or self.train_audio_head else []
        return [module for flag, module in FULLY_TRAINED.items() if getattr(self, flag)]

    def peft_config(self, with_fully_trained: bool = False, tied_audio_table: bool = False) -> peft.LoraConfig:
        """peft's config. Training leaves the fully trained modules out (they train in place, without
        peft's copy); the exported adapter lists them as `modules_to_save`, which is how peft stores them."""
        groups = "|".join(TARGET_GROUPS[t] for t in self.targets)
        return peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                               target_modules=rf".*layers\.\d+\.({groups})",
                               modules_to_save=self.fully_trained_modules(tied_audio_table) if with_fully_trained
                               else None)


def is_adapter_param(name: str) -> bool:
    return f".{ADAPTER}." in name and (".lora_A." in name or ".lora_B." in name)


def apply_lora(model: HiggsAudioModel, cfg: LoraConfig) -> None:
    """Inject the adapters in place; afterwards only they and the fully trained modules require grad."""
    peft.inject_adapter_in_model(cfg.peft_config(), model, adapter_name=ADAPTER)
    tied = model.config.arch == "higgs_tts3"
    full = tuple(f"{m}." for m in cfg.fully_trained_modules(tied))
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_param(name) or name.startswith(full))
    n_train = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    n_all = sum(_numel(p) for p in model.parameters())
    log.info("LoRA rank %d on %s%s: %.3fM of %.2fM parameters trainable (%.2f%%)", cfg.rank, "+".join(cfg.targets),
             "".join(f", {m} in full" for m in cfg.fully_trained_modules(tied)), n_train / 1e6, n_all / 1e6,
             100 * n_train / n_all)


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 partitions report their full size here


def merged_state_dict(state: dict[str, torch.Tensor], config: HiggsAudioConfig,
                      cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """A trained run's state dict with the adapters merged into their base weights (plain model names).

    The model is built on the meta device and takes the given tensors as its weights, so only one copy
    of the weights is held; the base weights of adapted linears are updated in place.
    """
    with torch.device("meta"):
        model = model_for(config)
    tuner = peft.LoraModel(model, cfg.peft_config(), ADAPTER, low_cpu_mem_usage=True)
    _load_exactly(model, state)
    with torch.no_grad():
        merged = tuner.merge_and_unload()
    return merged.state_dict()


def adapted_model(state: dict[str, torch.Tensor], config: HiggsAudioConfig, cfg: LoraConfig) -> HiggsAudioModel:
    """The model as trained (adapters unmerged) from a run's consolidated state dict, in eval mode."""
    model = model_for(config)
    apply_lora(model, cfg)
    _load_exactly(model, state)
    return model.eval()


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KeyError(f"the checkpoint does not match the LoRA model it records: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    model.load_state_dict(state, assign=True)


def adapter_state_dict(state: dict[str, torch.Tensor], cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's file format: `base_model.model.<module>.lora_A.weight`, and the
    fully trained modules' weights under their own names."""
    full = tuple(f"{m}." for m in cfg.fully_trained_modules(_has_tied_table(state)))
    out = {}
    for name, t in state.items():
        if is_adapter_param(name):
            out[_PEFT_PREFIX + name.replace(f".{ADAPTER}.", ".")] = t
        elif name.startswith(full):
            out[_PEFT_PREFIX + name] = t
    if not any(is_adapter_param(n) for n in state):
        raise KeyError("the checkpoint holds no LoRA adapter weights although its config says LoRA was used")
    return out


def _has_tied_table(state: dict[str, torch.Tensor]) -> bool:
    return any(name.startswith(f"{TIED_AUDIO_TABLE}.") for name in state)


def save_adapter(state: dict[str, torch.Tensor], cfg: LoraConfig, out: str | Path,
                 base_model: str | None = None) -> Path:
    """Write the adapter alone: peft's `adapter_config.json` + `adapter_model.safetensors` (loads with
    `peft.PeftModel.from_pretrained(base, out)`), and our LoraConfig (which groups) in higgs_lora.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pcfg = cfg.peft_config(with_fully_trained=True, tied_audio_table=_has_tied_table(state))
    pcfg.base_model_name_or_path = base_model
    pcfg.save_pretrained(str(out))
    tensors = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(state, cfg).items()}
    save_file(tensors, out / _ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (out / ADAPTER_CONFIG_NAME).write_text(json.dumps({**asdict(cfg), "base_model": base_model}, indent=2) + "\n")
    return out
