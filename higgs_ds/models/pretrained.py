"""Load a checkpoint folder of any family: the family from its config.json (`family_of`), then the
family's own reader. What training, generation and export call; no code here knows a family."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from higgs_ds.audio_spec import AudioSpec, read_spec
from higgs_ds.models.checkpoint_files import read_config
from higgs_ds.models.family import ModelFamily
from higgs_ds.models.registry import family_for_config, family_of


def config_from_checkpoint(directory: str | Path, token_ids: dict[str, int] | None = None,
                           family: ModelFamily | None = None):
    """The model config of a checkpoint folder. `token_ids` (a tokenizer's, `family.token_ids`) give the
    special-token ids a config.json may lack; without them the folder's own tokenizer is asked."""
    family = family or family_of(directory)
    return family.checkpoint_config(Path(directory), read_config(directory), token_ids)


def checkpoint_state_dict(directory: str | Path, config, shapes: dict[str, tuple[int, ...]],
                          meta: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict under the model's names, layout), checked against `shapes`; see `ModelFamily`."""
    return family_for_config(config).checkpoint_state_dict(Path(directory), config, shapes, meta)


def load_weights(model: nn.Module, directory: str | Path) -> str:
    """Load a checkpoint into an unsharded `model`; returns the layout name. (A ZeRO-3-partitioned model is
    filled by `higgs_ds.train.parallelize`.)"""
    params = dict(model.named_parameters())
    sd, layout = checkpoint_state_dict(directory, model.config, {n: tuple(p.shape) for n, p in params.items()})
    with torch.no_grad():
        for name, t in sd.items():
            params[name].copy_(t)
    return layout


def from_pretrained(directory: str | Path, dtype: torch.dtype = torch.float32,
                    token_ids: dict[str, int] | None = None) -> nn.Module:
    """Build a model from a local checkpoint folder of any family and layout."""
    family = family_of(directory)
    model = family.build_model(config_from_checkpoint(directory, token_ids, family), dtype)
    load_weights(model, directory)
    return model


def checkpoint_audio_spec(directory: str | Path) -> AudioSpec | None:
    """What the checkpoint's audio side was trained on: its ``audio_spec.json`` (written by higgs-ds), else
    what its family says of a release; None when its audio side is new (a plain language model)."""
    spec = read_spec(directory)
    if spec is not None:
        return spec
    return family_of(directory).checkpoint_audio_spec(read_config(directory))
