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

from higgs_ds.audio_spec import HIGGS_V2_TOKENIZER, AudioSpec, read_spec
from higgs_ds.model.config import HiggsAudioConfig, token_ids_from_tokenizer
from higgs_ds.model.modeling import HiggsAudioModel
from higgs_ds.model.tts3 import HiggsTTS3Model
from higgs_ds.model.tts3_checkpoint import check_tts3_tensors, released_to_ours, tts3_config_from_folder

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
    if model_type == "higgs_multimodal_qwen3":  # Higgs TTS 3 (`higgs_ds.model.tts3_checkpoint`)
        return "tts3"
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
def config_from_checkpoint(directory: str | Path, token_ids: dict[str, int] | None = None) -> HiggsAudioConfig:
    """The model config of a checkpoint. `token_ids` (a tokenizer's, see `token_ids_from_tokenizer`) give the
    special-token ids a plain Llama or a transformers-port config.json does not hold."""
    cfg = read_config(directory)
    layout = detect_layout(cfg)
    if layout == "tts3":
        return tts3_config_from_folder(directory, cfg, token_ids)
    if layout == "llama":
        from transformers import LlamaConfig

        if token_ids is None:
            raise ValueError(f"{directory} is a plain Llama checkpoint: its tokenizer must supply the Higgs Audio "
                             f"special-token ids")
        cfg.pop("model_type", None)
        return HiggsAudioConfig(text_config=LlamaConfig(**cfg), **token_ids)
    return HiggsAudioConfig.from_dict(cfg, token_ids)


def tokenizer_ids_in(directory: str | Path) -> dict[str, int] | None:
    """Special-token ids of the tokenizer saved next to a checkpoint, or None when there is none."""
    d = Path(directory)
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()):
        return None
    from transformers import AutoTokenizer

    return token_ids_from_tokenizer(AutoTokenizer.from_pretrained(str(d)))


def checkpoint_audio_spec(directory: str | Path) -> AudioSpec | None:
    """What the checkpoint's audio side was trained on: its ``audio_spec.json`` (written by higgs-ds); for a
    Higgs Audio v2 checkpoint without one (the released models), the Higgs Audio v2 tokenizer's codes; None
    for a plain Llama (no audio side yet)."""
    spec = read_spec(directory)
    if spec is not None or detect_layout(read_config(directory)) == "llama":
        return spec
    return HIGGS_V2_TOKENIZER


def checkpoint_state_dict(directory: str | Path, config: HiggsAudioConfig,
                          shapes: dict[str, tuple[int, ...]], meta: bool = False) -> tuple[dict, str]:
    """A checkpoint of any supported layout, renamed to our names and checked against `shapes` (the model's
    full parameter shapes): (state dict, layout). `meta=True` reads names and shapes only. Raises naming
    the directory and the missing, unexpected or mis-shaped tensors."""
    layout = detect_layout(read_config(directory))
    raw = read_state_dict(directory, meta=meta)
    if layout == "tts3":  # the bundled codec is no model parameter: export copies it (`passthrough_tensors`)
        check_tts3_tensors(directory, raw)
        raw = released_to_ours(raw)[0]
    sd = {"boson": boson_to_ours, "hf": hf_to_ours, "tts3": dict}.get(layout, lambda s: llama_to_ours(s, config))(raw)
    missing = sorted(set(shapes) - set(sd))
    unexpected = sorted(set(sd) - set(shapes))
    if layout == "llama":  # a plain Llama has no audio embeddings or head yet: they keep their fresh init
        missing = [k for k in missing if k not in ("audio_codebook_embeddings.weight",
                                                   "audio_decoder_proj.audio_lm_head.weight")]
    if missing or unexpected:
        raise KeyError(f"{directory} ({layout} layout) does not match the model: "
                       f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                       f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for name, t in sd.items():
        if tuple(t.shape) != tuple(shapes[name]):
            raise ValueError(f"{directory}: {name} has shape {tuple(t.shape)}, the model expects {shapes[name]}")
    return sd, layout


def load_weights(model: HiggsAudioModel, directory: str | Path) -> str:
    """Load a checkpoint of any supported layout into an unsharded `model`; returns the layout name.
    (A ZeRO-3-partitioned model is filled by `higgs_ds.train.parallelize`.)"""
    params = dict(model.named_parameters())
    sd, layout = checkpoint_state_dict(directory, model.config, {n: tuple(p.shape) for n, p in params.items()})
    with torch.no_grad():
        for name, t in sd.items():
            params[name].copy_(t)
    return layout


def from_pretrained(directory: str | Path, dtype: torch.dtype = torch.float32,
                    token_ids: dict[str, int] | None = None) -> HiggsAudioModel:
    """Build a model from a local checkpoint directory of any supported layout (special-token ids that
    the config lacks come from `token_ids` or the tokenizer saved in the directory)."""
    if detect_layout(read_config(directory)) == "tts3":
        model = HiggsTTS3Model(config_from_checkpoint(directory, token_ids)).to(dtype)
        load_weights(model, directory)
        return model
    if token_ids is None and detect_layout(read_config(directory)) != "boson":
        token_ids = tokenizer_ids_in(directory)
    model = HiggsAudioModel(config_from_checkpoint(directory, token_ids)).to(dtype)
    load_weights(model, directory)
    return model


def passthrough_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a Higgs TTS 3 folder that are no model parameters (its bundled codec), to be written
    back unchanged on export; empty for other layouts."""
    if detect_layout(read_config(directory)) != "tts3":
        return {}
    return released_to_ours(read_state_dict(directory))[1]


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
