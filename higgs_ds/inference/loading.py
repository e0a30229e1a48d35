"""Load a model (and find its tokenizer) from any checkpoint the project produces or reads.

Accepted paths:
- an exported or released checkpoint directory (Boson or transformers layout: config.json +
  safetensors), loaded with `higgs_ds.model.checkpoint.from_pretrained`;
- a training run directory (``runs/demo``), its ``checkpoints/`` directory, or one tag directory
  (``runs/demo/checkpoints/step000300``): the ZeRO shards are consolidated in memory (as
  ``launch/export.py`` does) and the model config comes from the tag's ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from higgs_ds.model.checkpoint import from_pretrained
from higgs_ds.model.config import HiggsAudioConfig
from higgs_ds.model.modeling import HiggsAudioModel
from higgs_ds.train.checkpointing import latest_tag


@dataclass
class LoadedModel:
    model: HiggsAudioModel
    tokenizer_dir: Path | None  # where the tokenizer the model was trained with lives, when known
    source: str  # what was loaded, for logs


def _zero_checkpoint(path: Path, tag: str | None) -> tuple[Path, str] | None:
    """(checkpoints dir, tag) when `path` is a run dir, a checkpoints dir or a tag dir; else None."""
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file() or any(path.glob("step*/config.json")):
        tag = tag or latest_tag(path)
        if tag is None:
            raise FileNotFoundError(f"{path}: no 'latest' file; pass a checkpoint tag")
        return path, tag
    cfg = path / "config.json"
    if cfg.is_file() and "train" in json.loads(cfg.read_text()):
        if tag is not None and tag != path.name:
            raise ValueError(f"{path} is checkpoint tag {path.name!r}, but tag {tag!r} was requested")
        return path.parent, path.name
    return None


def load_model(path: str | Path, tag: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory")
    zero = _zero_checkpoint(path, tag)
    if zero is None:
        model = from_pretrained(path, dtype=dtype)
        tokenizer_dir = path if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() \
            else None
        return LoadedModel(model.to(device).eval(), tokenizer_dir, str(path))

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt_dir, tag = zero
    meta_path = ckpt_dir / tag / "config.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: not a complete higgs_ds training checkpoint")
    meta = json.loads(meta_path.read_text())
    model = HiggsAudioModel(HiggsAudioConfig.from_boson_dict(meta["model"]))
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{ckpt_dir / tag}: state dict does not match the model: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    tokenizer = meta.get("train", {}).get("data", {}).get("tokenizer")
    tokenizer_dir = Path(tokenizer) if tokenizer and Path(tokenizer).is_dir() else None
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), tokenizer_dir, str(ckpt_dir / tag))
