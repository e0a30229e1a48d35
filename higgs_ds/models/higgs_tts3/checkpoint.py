"""The released Higgs TTS 3 folder, both ways: config.json (`model_type: higgs_multimodal_qwen3`) and
safetensors with Boson's names.

    tied.embedding.text_embedding.weight                    -> embed_tokens.weight
    body.layers.N.* / body.norm.weight                      -> layers.N.* / norm.weight
    tied.embedding.modality_embeddings.0.embedding.weight   -> audio_table.weight (embedding and head)

Every other tensor of the folder is not a model parameter: the bundled codec under
`tied.embedding.modality_embeddings.0.model.*` and any stored head copies. They are read as
"passthrough" tensors and written back byte for byte on export.
"""

from __future__ import annotations

from pathlib import Path

import torch

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER, AudioSpec
from higgs_ds.models.checkpoint_files import (
    check_names_and_shapes,
    folder_tokenizer,
    read_config,
    read_state_dict,
    write_config,
    write_state_dict,
)
from higgs_ds.models.higgs_tts3.config import MODEL_TYPE, HiggsTTS3Config, tts3_token_ids

_NAME_MAP = {  # released prefix -> ours
    "tied.embedding.text_embedding.": "embed_tokens.",
    "body.layers.": "layers.",
    "body.norm.": "norm.",
    "tied.embedding.modality_embeddings.0.embedding.": "audio_table.",
}
CODEC_PREFIX = "tied.embedding.modality_embeddings.0.model."
AUDIO_TABLE = "tied.embedding.modality_embeddings.0.embedding.weight"


def released_to_ours(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model tensors under our names, passthrough tensors under their released names)."""
    ours, passthrough = {}, {}
    for name, tensor in sd.items():
        prefix = next((p for p in _NAME_MAP if name.startswith(p)), None)
        if prefix is None:
            passthrough[name] = tensor
        else:
            ours[_NAME_MAP[prefix] + name[len(prefix):]] = tensor
    return ours, passthrough


def ours_to_released(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    back = {v: k for k, v in _NAME_MAP.items()}
    out = {}
    for name, tensor in sd.items():
        prefix = next((p for p in back if name.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"{name} has no name in the released Higgs TTS 3 layout")
        out[back[prefix] + name[len(prefix):]] = tensor
    return out


def check_tts3_tensors(directory: str | Path, names) -> None:
    """A TTS 3 config.json must come with TTS 3 tensors (the fused audio table, the Qwen3 body)."""
    names = set(names)
    if AUDIO_TABLE not in names or not any(n.startswith("body.layers.") for n in names):
        raise KeyError(f"{directory}: config.json says {MODEL_TYPE}, but the safetensors lack {AUDIO_TABLE} or "
                       f"body.layers.*")


def reads_checkpoint(config_dict: dict) -> bool:
    return config_dict.get("model_type") == MODEL_TYPE


def checkpoint_audio_spec(config_dict: dict) -> AudioSpec:
    """The release holds the Higgs Audio tokenizer's codes (8 x 1024 at 25 frames/s)."""
    return HIGGS_AUDIO_TOKENIZER


def checkpoint_config(directory: Path, config_dict: dict, token_ids: dict[str, int] | None = None) -> HiggsTTS3Config:
    """The config of a TTS 3 folder; ids from `token_ids`, else the folder's tokenizer, else config.json."""
    if token_ids is None and (tokenizer := folder_tokenizer(directory)) is not None:
        token_ids = tts3_token_ids(tokenizer)
    return HiggsTTS3Config.from_dict(config_dict, token_ids)


def checkpoint_state_dict(directory: Path, config: HiggsTTS3Config, shapes: dict[str, tuple[int, ...]],
                          meta: bool = False) -> tuple[dict, str]:
    """The model's tensors of a released-layout folder under our names (the bundled codec is no model
    parameter: export copies it, `passthrough_tensors`), checked against `shapes`."""
    raw = read_state_dict(directory, meta=meta)
    check_tts3_tensors(directory, raw)
    sd = released_to_ours(raw)[0]
    check_names_and_shapes(directory, "released", sd, shapes, sorted(set(shapes) - set(sd)),
                           sorted(set(sd) - set(shapes)))
    return sd, "released"


def passthrough_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TTS 3 folder that are no model parameters (its bundled codec), written back unchanged
    on export."""
    return released_to_ours(read_state_dict(directory))[1]


def save_checkpoint(state_dict: dict[str, torch.Tensor], config: HiggsTTS3Config, directory: str | Path,
                    layout: str = "released", init: Path | None = None, max_shard_size: int | str = "5GB") -> Path:
    """Write the released layout: config.json + safetensors with Boson's names. When the run started from a
    TTS 3 folder (`init`), its bundled codec tensors are copied unchanged and the model tensors take that
    folder's dtype."""
    if layout != "released":
        raise ValueError(f"unknown Higgs TTS 3 export layout {layout!r}; it has one: 'released'")
    passthrough, dtype = {}, None
    if init is not None and Path(init).is_dir() and reads_checkpoint(read_config(init)):
        passthrough = passthrough_tensors(init)
        dtype = read_state_dict(init, meta=True)[AUDIO_TABLE].dtype
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.to(dtype or v.dtype) for k, v in ours_to_released(state_dict).items()}
    clash = sorted(set(sd) & set(passthrough))
    if clash:
        raise KeyError(f"passthrough tensors {clash[:4]} collide with model tensors")
    write_config(d, config.to_boson_dict())
    write_state_dict({**sd, **passthrough}, d, max_shard_size)
    return d
