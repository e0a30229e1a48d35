"""Load a model, with its audio spec, prompt layout and tokenizer, from any checkpoint the project reads.

Accepted paths:
- an exported or released checkpoint directory of any family and layout (config.json + safetensors),
  loaded with `higgs_ds.models.pretrained.from_pretrained`; its ``audio_spec.json`` and
  ``prompt_config.json`` when higgs-ds exported it (a release has neither: its family says what its codes
  are, and its prompt is the default layout);
- a training run directory (``runs/demo``), its ``checkpoints/`` directory, or one tag directory
  (``runs/demo/checkpoints/step000300``): the ZeRO shards are consolidated in memory and the model config,
  audio spec and prompt come from the tag's ``config.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.schema import PromptConfig
from higgs_ds.models import ModelFamily, family_for_config
from higgs_ds.models.checkpoint_files import has_tokenizer
from higgs_ds.models.pretrained import checkpoint_audio_spec, from_pretrained
from higgs_ds.run_dir import RunCheckpoint, find_run_checkpoint, read_prompt

# (a LoRA run's consolidated weights, the run) -> plain weights with the adapters merged (train/lora.py's)
LoraMerge = Callable[[dict[str, torch.Tensor], RunCheckpoint], dict[str, torch.Tensor]]


@dataclass
class LoadedModel:
    model: nn.Module  # of its family's model class, in eval mode
    tokenizer_dir: Path | None  # where the tokenizer the model was trained with lives, when known
    audio_spec: AudioSpec | None  # what the model's audio codes mean (None: a plain Llama, no audio yet)
    prompt: PromptConfig  # the prompt layout the model was trained with
    source: str  # what was loaded, for logs

    @property
    def family(self) -> ModelFamily:
        return family_for_config(self.model.config)


def audio_spec_of(path: str | Path, tag: str | None = None) -> AudioSpec | None:
    """What the codes of the checkpoint at `path` mean, from its config files alone (no weights read); the
    same checks of the path and `tag` as `load_model`."""
    run = find_run_checkpoint(path, tag)
    return run.audio_spec if run is not None else checkpoint_audio_spec(path)


def load_model(path: str | Path, tag: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, merge_lora: LoraMerge | None = None) -> LoadedModel:
    """`merge_lora`: how a LoRA run's adapters are merged (without it a LoRA run is refused: export it)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory")
    run = find_run_checkpoint(path, tag)
    if run is None:
        model = from_pretrained(path, dtype=dtype)
        return LoadedModel(model.to(device).eval(), path if has_tokenizer(path) else None, checkpoint_audio_spec(path),
                           read_prompt(path), str(path))
    if run.uses_lora and merge_lora is None:
        raise ValueError(f"{run.path} is a LoRA run: its weights are the base plus adapters. Export it first "
                         f"(python launch/export.py {run.ckpt_dir} --out DIR merges the adapters), then generate "
                         f"from DIR")
    model = run.family.build_model(run.model_config)
    state = run.state_dict()
    if run.uses_lora:
        state = merge_lora(state, run)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{run.path}: state dict does not match the model: missing {missing[:8]}, "
                       f"unexpected {unexpected[:8]}")
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), run.tokenizer_dir, run.audio_spec, run.prompt,
                       str(run.path))
