"""`ModelFamily`: the one contract between a model family and the rest of higgs-ds.

A family (Higgs Audio v2, Higgs TTS 3, ...) is one package, `higgs_ds/models/<family>/`, whose `FAMILY`
object fills the fields below. The trainer, the data path, generation, export and the scripts reach a
family only through these fields (the registry hands them the object: `higgs_ds.models.get_family`), so a
new family is one new folder and no edit anywhere else. The pattern is torchtitan's `TrainSpec`.

Model configs and models of every family also share a few attributes, listed in `AudioModelConfig`
and in `higgs_ds.models.base_model.AudioModel`'s forward contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.renderer import Renderer
from higgs_ds.models.delay_decoding import DelayPatternState


class AudioModelConfig(Protocol):
    """What code outside a family reads from any family's model config."""

    audio_num_codebooks: int
    audio_codebook_size: int  # codes per codebook, without the two stream ids
    audio_stream_bos_id: int
    audio_stream_eos_id: int
    audio_out_token_idx: int  # the id of every generated audio position
    use_delay_pattern: bool

    @property
    def codebook_rows(self) -> int: ...  # codes + stream BOS + stream EOS

    @property
    def vocab_size(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def audio_head_token_ids(self) -> tuple[int, ...]: ...  # ids of the positions the audio head reads


@dataclass(frozen=True)
class FreshModelShape:
    """The backbone of a model trained from scratch (no `model.init`): the training config's `model.*`."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


@dataclass(frozen=True)
class ModelFamily:
    """Everything specific to one model family, as the rest of higgs-ds needs it."""

    name: str
    """Registry key: `model.arch` of a recipe, recorded in run metadata and exported config.json."""
    model_cls: Callable[[Any], nn.Module]
    """Builds the model from its config (the forward contract of `higgs_ds.models.base_model.AudioModel`)."""
    config_cls: type
    """The family's model config class (`AudioModelConfig`); the registry finds a config's family by it."""
    fresh_config: Callable[[FreshModelShape, Any, AudioSpec], Any]
    """(shape, tokenizer, the data's audio spec) -> the config of a model trained from scratch."""
    tiny_config: Callable[..., Any]
    """(vocab_size=..., **overrides) -> a tiny config for tests (token ids inside the vocabulary)."""
    released_config: Callable[[], Any]
    """The shape of the released checkpoint (sizing, kernel shapes, memory estimates)."""
    config_to_dict: Callable[[Any], dict]
    """A config as the dict run metadata records (`config_from_dict` reads it back)."""
    config_from_dict: Callable[[dict, dict | None], Any]
    """(recorded or config.json dict, token ids or None) -> the config."""
    token_ids: Callable[[Any], dict[str, int]]
    """Validates a tokenizer: the config's special-token ids as it maps them; ValueError naming what it lacks.
    A family never selects by tokenizer: the tokenizer must fit the family `model.arch` chose."""
    special_tokens: tuple[str, ...]
    """The special tokens a tokenizer of this family holds (a new tokenizer, like the demo's, gets them)."""
    make_renderer: Callable[[Any, int], Renderer]
    """(tokenizer, codebooks) -> the prompt renderer (training samples, the collator, generation prompts)."""
    decoding_state: type[DelayPatternState]
    """Generation's delay-pattern bookkeeping and stopping rule."""
    reads_checkpoint: Callable[[dict], bool]
    """Whether a checkpoint folder's config.json (as a dict) is in one of the layouts this family reads."""
    checkpoint_config: Callable[[Path, dict, dict | None], Any]
    """(folder, its config.json dict, token ids or None: the folder's tokenizer is asked) -> the config."""
    checkpoint_state_dict: Callable[[Path, Any, dict[str, tuple[int, ...]], bool], tuple[dict, str]]
    """(folder, config, the model's parameter shapes, meta) -> (state dict under the model's names, layout).
    Checks names and shapes, raising naming the folder; meta=True reads names and shapes only."""
    checkpoint_audio_spec: Callable[[dict], AudioSpec | None]
    """What a folder without `audio_spec.json` (a release) was trained on, from its config.json dict; None
    when its audio side is new (e.g. a plain language model to start from)."""
    export_layouts: tuple[str, ...]
    """The checkpoint layouts `export --layout` may write; the first is the default."""
    save_checkpoint: Callable[[dict, Any, Path, str, Path | None, str], None]
    """(state dict, config, folder, layout, the folder the run started from or None, max shard size) ->
    config.json + safetensors in that layout."""
    lora_groups: Mapping[str, str]
    """LoRA target group -> regex of the linears it adapts (module names relative to `layers.N.`)."""
    lora_fully_trained: Mapping[str, tuple[str, ...]]
    """LoraConfig flag (`train_audio_embeddings`, `train_audio_head`) -> the modules it trains in full."""
    audio_parameters: tuple[str, ...]
    """Name fragments of the parameters `freeze=audio_only` trains."""
    zero3_leaf_modules: Callable[[bool], list[type[nn.Module]]] = lambda fused_kernels: []
    """(fused Triton kernels in use) -> module classes ZeRO-3 must gather whole (a kernel reads their weights)."""

    def __post_init__(self) -> None:
        if not self.export_layouts:
            raise ValueError(f"model family {self.name!r} names no export layout")
        unknown = set(self.lora_fully_trained) - {"train_audio_embeddings", "train_audio_head"}
        if unknown:
            raise ValueError(f"model family {self.name!r}: unknown LoRA flags {sorted(unknown)}")

    def build_model(self, config, dtype: torch.dtype | None = None) -> nn.Module:
        model = self.model_cls(config)
        return model if dtype is None else model.to(dtype)
