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

import json
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

from higgs_ds.model.tts3_config import MODEL_TYPE, HiggsTTS3Config, tts3_token_ids

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


def folder_token_ids(directory: str | Path) -> dict[str, int] | None:
    """`<|audio|>` and pad ids of the tokenizer saved in the folder, or None when there is none."""
    d = Path(directory)
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()):
        return None
    from transformers import AutoTokenizer

    return tts3_token_ids(AutoTokenizer.from_pretrained(str(d)))


def tts3_config_from_folder(directory: str | Path, config_dict: dict,
                            token_ids: dict[str, int] | None = None) -> HiggsTTS3Config:
    """The config of a TTS 3 folder; ids from `token_ids`, else the folder's tokenizer, else config.json."""
    return HiggsTTS3Config.from_dict(config_dict, token_ids or folder_token_ids(directory))


def save_tts3(state_dict: dict[str, torch.Tensor], config: HiggsTTS3Config, directory: str | Path,
              passthrough: dict[str, torch.Tensor] | None = None, dtype: torch.dtype | None = None,
              max_shard_size: str = "5GB") -> Path:
    """Write the released layout: config.json + safetensors with Boson's names; `passthrough` tensors
    (the bundled codec) are written unchanged; model tensors are cast to `dtype` when given."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in ours_to_released(state_dict).items()}
    clash = sorted(set(sd) & set(passthrough or {}))
    if clash:
        raise KeyError(f"passthrough tensors {clash[:4]} collide with model tensors")
    sd.update({k: v.contiguous().cpu() for k, v in (passthrough or {}).items()})
    (d / "config.json").write_text(json.dumps(config.to_boson_dict(), indent=2) + "\n")
    save_torch_state_dict(sd, d, max_shard_size=max_shard_size, metadata={"format": "pt"})
    return d
