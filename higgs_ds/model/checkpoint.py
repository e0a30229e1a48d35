"""Checkpoint I/O in the real formats only: safetensors (single file or sharded with an index).

Layouts:
- "boson": Boson AI's original `HiggsAudioModel` names (our own module names); split
  `*_frozen` / `*_trainable` weights from partial freezing are merged on load.
- "hf": the transformers-native port (`HiggsAudioV2ForConditionalGeneration`, `use_text_head=True`).
- "llama": a plain Llama checkpoint to start from: the audio MLPs and norms are copied from the text
  ones; audio embeddings and the audio head keep their fresh initialisation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import safe_open
from safetensors.torch import load_file as _load_file

from higgs_ds.model.config import HiggsAudioConfig
from higgs_ds.model.modeling import HiggsAudioModel

log = logging.getLogger(__name__)

# (concatenated name, [frozen part, trainable part]) from Boson's PartiallyFrozen{Embedding,Linear}
_SPLIT_WEIGHTS = {
    "embed_tokens.weight": ("embed_tokens.embedding_frozen.weight", "embed_tokens.embedding_trainable.weight"),
    "audio_decoder_proj.text_lm_head.weight": ("audio_decoder_proj.text_lm_head.linear_frozen.weight",
                                               "audio_decoder_proj.text_lm_head.linear_trainable.weight"),
    "audio_decoder_proj.audio_lm_head.weight": ("audio_decoder_proj.audio_lm_head.linear_frozen.weight",
                                                "audio_decoder_proj.audio_lm_head.linear_trainable.weight"),
}
# Keys real checkpoints carry that hold no weights of ours (the HF converter drops the same).
_IGNORED_SUFFIXES = ("audio_codebook_weights", "rotary_emb.inv_freq")
_IGNORED_PREFIXES = ("audio_tower.", "audio_encoder_proj.")  # Whisper tower, skipped in the release
_HF_AUDIO_EMBED = "model.embed_audio_tokens.embed_audio_tokens.weight"


def read_state_dict(directory: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` or of the shards listed in `model.safetensors.index.json`.
    meta=True reads only names, shapes and dtypes (tensors on the meta device): what ranks that do not
    fill any weights need, so that a 5.8B checkpoint is read from disk once per node, not per rank."""
    load_file = _load_meta if meta else _load_file
    d = Path(directory)
    index = d / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [f for f in files if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that do not exist: {missing}")
        sd = {}
        for f in files:
            sd.update(load_file(d / f))
        return sd
    single = d / "model.safetensors"
    if single.exists():
        return load_file(single)
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {d}")


def _load_meta(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    with safe_open(path, framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open handles are not iterable)
            sl = f.get_slice(key)
            dtype = getattr(torch, {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(sl.get_dtype(),
                                                                                            "float32"))
            out[key] = torch.empty(sl.get_shape(), dtype=dtype, device="meta")
    return out


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {directory}")
    return json.loads(path.read_text())


def detect_layout(config_dict: dict) -> str:
    model_type = config_dict.get("model_type")
    if model_type == "higgs_audio_v2":
        return "hf"
    if model_type == "higgs_audio" or "text_config" in config_dict:
        return "boson"
    if model_type == "llama":
        return "llama"
    raise ValueError(f"cannot tell the checkpoint layout from config.json (model_type={model_type!r})")


# ---- name maps -------------------------------------------------------------------------------
def boson_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    for merged, (frozen, trainable) in _SPLIT_WEIGHTS.items():
        if frozen in sd or trainable in sd:
            parts = [sd.pop(k) for k in (frozen, trainable) if k in sd]
            sd[merged] = torch.cat(parts, dim=0)
    dropped = [k for k in sd if k.endswith(_IGNORED_SUFFIXES) or k.startswith(_IGNORED_PREFIXES)]
    if any(k.startswith(_IGNORED_PREFIXES) for k in dropped):
        log.warning("ignoring the Whisper audio tower weights: this model feeds reference audio as codes")
    for k in dropped:
        del sd[k]
    return sd


def hf_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k == _HF_AUDIO_EMBED:
            out["audio_codebook_embeddings.weight"] = v
        elif k.startswith("model."):
            out[k[len("model."):]] = v
        elif k in ("audio_lm_head.weight", "text_lm_head.weight"):
            out["audio_decoder_proj." + k] = v
        else:
            out[k] = v
    return boson_to_ours(out)


def ours_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k == "audio_codebook_embeddings.weight":
            out[_HF_AUDIO_EMBED] = v
        elif k.startswith("audio_decoder_proj."):
            out[k[len("audio_decoder_proj."):]] = v
        else:
            out["model." + k] = v
    return out


def llama_to_ours(sd: dict[str, torch.Tensor], config: HiggsAudioConfig) -> dict[str, torch.Tensor]:
    """Text weights from a Llama checkpoint; audio MLPs and norms start as copies of the text ones."""
    out = {}
    for k, v in sd.items():
        name = k[len("model."):] if k.startswith("model.") else k
        if name == "lm_head.weight":
            out["audio_decoder_proj.text_lm_head.weight"] = v
        elif not name.endswith(_IGNORED_SUFFIXES):
            out[name] = v
    out.setdefault("audio_decoder_proj.text_lm_head.weight", out["embed_tokens.weight"])  # tied Llama
    for i in config.audio_dual_ffn_layers:
        for part in ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                     "input_layernorm.weight", "post_attention_layernorm.weight"):
            src = f"layers.{i}.{part}"
            dst = f"layers.{i}.audio_{part}"
            out[dst] = out[src].clone()
    return out


# ---- loading ---------------------------------------------------------------------------------
def config_from_checkpoint(directory: str | Path, **llama_overrides) -> HiggsAudioConfig:
    cfg = read_config(directory)
    layout = detect_layout(cfg)
    if layout == "llama":
        from transformers import LlamaConfig

        cfg.pop("model_type", None)
        return HiggsAudioConfig(text_config=LlamaConfig(**cfg), **llama_overrides)
    return HiggsAudioConfig.from_dict(cfg)


def load_weights(model: HiggsAudioModel, directory: str | Path, strict: bool = True) -> str:
    """Load a checkpoint of any supported layout into `model`; returns the layout name.

    Works on a ZeRO-3-partitioned model as well: each parameter is gathered, filled on rank 0,
    and re-partitioned (the pattern transformers uses for `from_pretrained` under ZeRO-3).
    """
    import torch.distributed as dist

    layout = detect_layout(read_config(directory))
    zero3 = any(hasattr(p, "ds_id") for p in model.parameters())
    filler = not zero3 or not dist.is_initialized() or dist.get_rank() == 0  # only rank 0 copies under ZeRO-3
    raw = read_state_dict(directory, meta=not filler)
    sd = {"boson": boson_to_ours, "hf": hf_to_ours}.get(layout, lambda s: llama_to_ours(s, model.config))(raw)
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if layout == "llama":
        fresh = ("audio_codebook_embeddings.weight", "audio_decoder_proj.audio_lm_head.weight")
        missing = [k for k in missing if k not in fresh]
    if strict and (missing or unexpected):
        raise KeyError(f"{directory} ({layout} layout) does not match the model: "
                       f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                       f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    _copy_into(expected, sd, directory)
    return layout


def _copy_into(params: dict[str, torch.nn.Parameter], sd: dict[str, torch.Tensor], source) -> None:
    """Copy checked tensors into the parameters; under ZeRO-3 each parameter is gathered, filled by
    rank 0 (the only rank holding real tensors) and re-partitioned."""
    import torch.distributed as dist

    zero3 = any(hasattr(p, "ds_id") for p in params.values())
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    for name, p in params.items():
        if name not in sd:
            continue
        t = sd[name]
        full_shape = tuple(p.ds_shape) if zero3 and hasattr(p, "ds_shape") else tuple(p.shape)
        if tuple(t.shape) != full_shape:
            raise ValueError(f"{source}: {name} has shape {tuple(t.shape)}, the model expects {full_shape}")
        if zero3:
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                if rank == 0:
                    p.data.copy_(t)
        else:
            with torch.no_grad():
                p.copy_(t)


def from_pretrained(directory: str | Path, dtype: torch.dtype = torch.float32) -> HiggsAudioModel:
    """Build a model from a local checkpoint directory of any supported layout."""
    model = HiggsAudioModel(config_from_checkpoint(directory)).to(dtype)
    load_weights(model, directory)
    return model


# ---- saving ----------------------------------------------------------------------------------
def save_pretrained(state_dict: dict[str, torch.Tensor], config: HiggsAudioConfig, directory: str | Path,
                    layout: str = "boson", max_shard_size: str = "5GB") -> Path:
    """Write config.json + safetensors (sharded with an index when larger than `max_shard_size`).

    "hf" output loads with `HiggsAudioV2ForConditionalGeneration.from_pretrained(dir, use_text_head=True)`.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if layout == "hf":
        sd = ours_to_hf(sd)
        config.to_hf_port_config().save_pretrained(d)
    elif layout == "boson":
        (d / "config.json").write_text(json.dumps(config.to_boson_dict(), indent=2) + "\n")
    else:
        raise ValueError(f"unknown export layout {layout!r}; use 'boson' or 'hf'")
    save_torch_state_dict(sd, d, max_shard_size=max_shard_size, metadata={"format": "pt"})
    return d
