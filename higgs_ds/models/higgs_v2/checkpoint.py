"""Higgs Audio v2 checkpoint folders in the real formats only (safetensors, `checkpoint_files`).

Layouts:
- "boson": Boson AI's original `HiggsAudioModel` names (our own module names); split
  `*_frozen` / `*_trainable` weights from partial freezing are merged on load.
- "hf": the transformers-native port (`HiggsAudioV2ForConditionalGeneration`, `use_text_head=True`).
- "llama": a plain Llama checkpoint to start from: the audio MLPs and norms are copied from the text
  ones; audio embeddings and the audio head keep their fresh initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import LlamaConfig

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER, AudioSpec
from higgs_ds.models.checkpoint_files import (
    check_names_and_shapes,
    folder_tokenizer,
    read_config,
    read_state_dict,
    write_config,
    write_state_dict,
)
from higgs_ds.models.higgs_v2.config import HiggsAudioConfig, token_ids_from_tokenizer

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


_LAYOUTS = {"higgs_audio_v2": "hf", "higgs_audio": "boson", "llama": "llama"}  # config.json model_type -> layout


def detect_layout(config_dict: dict) -> str | None:
    """The layout of a config.json dict, or None when it is no Higgs Audio v2 (or plain Llama) folder."""
    model_type = config_dict.get("model_type")
    if model_type is None and "text_config" in config_dict:  # Boson's early configs name no model_type
        return "boson"
    return _LAYOUTS.get(model_type)


def reads_checkpoint(config_dict: dict) -> bool:
    return detect_layout(config_dict) is not None


def _layout(config_dict: dict, directory) -> str:
    layout = detect_layout(config_dict)
    if layout is None:
        raise ValueError(f"{directory}: not a Higgs Audio v2 checkpoint (model_type={config_dict.get('model_type')!r})")
    return layout


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


# ---- loading ----------------------------------------------------------------------------------
def checkpoint_config(directory: Path, config_dict: dict, token_ids: dict[str, int] | None = None) -> HiggsAudioConfig:
    """The model config of a folder. `token_ids` (a tokenizer's, see `token_ids_from_tokenizer`) give the
    special-token ids a plain Llama or a transformers-port config.json does not hold; without them the
    folder's own tokenizer is asked (Boson's layout holds every id itself)."""
    layout = _layout(config_dict, directory)
    if token_ids is None and layout != "boson" and (tokenizer := folder_tokenizer(directory)) is not None:
        token_ids = token_ids_from_tokenizer(tokenizer)
    if layout == "llama":
        if token_ids is None:
            raise ValueError(f"{directory} is a plain Llama checkpoint: its tokenizer must supply the Higgs Audio "
                             f"special-token ids")
        cfg = {k: v for k, v in config_dict.items() if k != "model_type"}
        return HiggsAudioConfig(text_config=LlamaConfig(**cfg), **token_ids)
    return HiggsAudioConfig.from_dict(config_dict, token_ids)


def checkpoint_audio_spec(config_dict: dict) -> AudioSpec | None:
    """A release without `audio_spec.json` holds the Higgs Audio tokenizer's codes; a plain Llama no audio yet."""
    return None if detect_layout(config_dict) == "llama" else HIGGS_AUDIO_TOKENIZER


def checkpoint_state_dict(directory: Path, config: HiggsAudioConfig, shapes: dict[str, tuple[int, ...]],
                          meta: bool = False) -> tuple[dict, str]:
    """A checkpoint of any v2 layout, renamed to our names and checked against `shapes` (the model's full
    parameter shapes): (state dict, layout). Raises naming the folder and the missing, unexpected or
    mis-shaped tensors."""
    layout = _layout(read_config(directory), directory)
    raw = read_state_dict(directory, meta=meta)
    sd = {"boson": boson_to_ours, "hf": hf_to_ours}.get(layout, lambda s: llama_to_ours(s, config))(raw)
    missing = sorted(set(shapes) - set(sd))
    unexpected = sorted(set(sd) - set(shapes))
    if layout == "llama":  # a plain Llama has no audio embeddings or head yet: they keep their fresh init
        missing = [k for k in missing if k not in ("audio_codebook_embeddings.weight",
                                                   "audio_decoder_proj.audio_lm_head.weight")]
    check_names_and_shapes(directory, layout, sd, shapes, missing, unexpected)
    return sd, layout


# ---- saving ----------------------------------------------------------------------------------
def save_checkpoint(state_dict: dict[str, torch.Tensor], config: HiggsAudioConfig, directory: str | Path,
                    layout: str = "boson", init: Path | None = None, max_shard_size: int | str = "5GB") -> Path:
    """Write config.json + safetensors (sharded with an index when larger than `max_shard_size`).

    "hf" output loads with `HiggsAudioV2ForConditionalGeneration.from_pretrained(dir, use_text_head=True)`.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if layout == "hf":
        state_dict = ours_to_hf(state_dict)
        config.to_hf_port_config().save_pretrained(d)
    elif layout == "boson":
        write_config(d, config.to_boson_dict())
    else:
        raise ValueError(f"unknown export layout {layout!r}; use 'boson' or 'hf'")
    write_state_dict(state_dict, d, max_shard_size)
    return d
