"""A third model family that lives only in the tests: a plain Llama backbone (transformers' layers) with a
summed multi-codebook audio embedding and an untied multi-codebook audio head, no text loss.

It proves the seam: higgs-ds trains, resumes, exports and generates it through the real launcher with
`model.arch=tests.families.plain_llama:FAMILY`, and no file of `higgs_ds/` names it. Its prompt is

    <|begin_of_text|> [<|AUDIO|> x (T_ref+K+1)] text <|audio_out_bos|> <|AUDIO_OUT|> x (T+K+1)

with the shared `[BOS | codes | EOS]` delay pattern (the base `Collator`'s rows) and the shared stopping
rule (`DelayPatternState`); it uses the demo tokenizer's special tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import IGNORE_INDEX, delay_segment_input, segment_positions
from higgs_ds.data.render import AudioSegment, RenderedSample, encode_text, lookup_tokens
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.data.text import normalize_arabic
from higgs_ds.models import FreshModelShape, ModelFamily
from higgs_ds.models.base_model import AudioModel, AudioModelOutput
from higgs_ds.models.checkpoint_files import (
    check_names_and_shapes,
    folder_tokenizer,
    read_state_dict,
    write_config,
    write_state_dict,
)
from higgs_ds.models.config_shape import AudioModelShape, fresh_sizes, spec_fields, tiny_text_sizes
from higgs_ds.models.delay_decoding import DelayPatternState
from higgs_ds.models.heads import LinearWithLoss, no_text_head, no_text_logits
from higgs_ds.models.loss import head_losses

MODEL_TYPE = "plain_llama_audio"
TOKENS = {"begin": "<|begin_of_text|>", "pad": "<|end_of_text|>", "audio_out_bos": "<|audio_out_bos|>",
          "audio_in": "<|AUDIO|>", "audio_out": "<|AUDIO_OUT|>"}


def token_ids(tokenizer) -> dict[str, int]:
    ids = lookup_tokens(tokenizer, TOKENS, "plain family's")
    return {"bos_token_id": ids["begin"], "pad_token_id": ids["pad"], "audio_out_bos_token_id": ids["audio_out_bos"],
            "audio_in_token_idx": ids["audio_in"], "audio_out_token_idx": ids["audio_out"]}


@dataclass
class PlainAudioConfig(AudioModelShape):
    text_config: LlamaConfig
    bos_token_id: int
    pad_token_id: int
    audio_out_bos_token_id: int
    audio_in_token_idx: int
    audio_out_token_idx: int
    audio_num_codebooks: int = 8
    audio_codebook_size: int = 1024
    audio_stream_bos_id: int = 1024
    audio_stream_eos_id: int = 1025
    use_delay_pattern: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.text_config, dict):
            self.text_config = LlamaConfig(**self.text_config)
        self.text_config._attn_implementation = "sdpa"

    @property
    def audio_head_token_ids(self) -> tuple[int, ...]:
        return (self.audio_out_token_idx,)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("text_config", "extra")}
        text = self.text_config.to_dict()
        text.pop("_attn_implementation_internal", None)
        return {"model_type": MODEL_TYPE, "text_config": text, **d}

    @classmethod
    def from_dict(cls, d: dict, ids: dict[str, int] | None = None) -> PlainAudioConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, **(ids or {})})


def tiny_config(vocab_size: int = 512, **overrides) -> PlainAudioConfig:
    text = LlamaConfig(vocab_size=vocab_size, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **tiny_text_sizes(overrides))
    ids = dict(bos_token_id=vocab_size - 5, pad_token_id=vocab_size - 4, audio_out_bos_token_id=vocab_size - 3,
               audio_in_token_idx=vocab_size - 2, audio_out_token_idx=vocab_size - 1)
    return PlainAudioConfig(text_config=text, **{**ids, **overrides})


def fresh_config(shape: FreshModelShape, tokenizer, spec: AudioSpec) -> PlainAudioConfig:
    return tiny_config(vocab_size=len(tokenizer), **fresh_sizes(shape), **spec_fields(spec), **token_ids(tokenizer))


class PlainAudioModel(AudioModel):
    def __init__(self, config: PlainAudioConfig):
        super().__init__()
        self.config = config
        tc = config.text_config
        self.embed_tokens = nn.Embedding(tc.vocab_size, tc.hidden_size)
        self.audio_embed = nn.Embedding(config.audio_num_codebooks * config.codebook_rows, tc.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(tc, i) for i in range(tc.num_hidden_layers))
        self.norm = LlamaRMSNorm(tc.hidden_size, eps=tc.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=tc)
        self.audio_head = LinearWithLoss(tc.hidden_size, config.audio_num_codebooks * config.codebook_rows,
                                         num_codebooks=config.audio_num_codebooks)
        self.register_buffer("offsets", torch.arange(config.audio_num_codebooks) * config.codebook_rows,
                             persistent=False)
        self.gradient_checkpointing = False
        self.reset_parameters()

    def init_module(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.text_config.initializer_range)
        elif isinstance(module, LlamaRMSNorm):
            nn.init.ones_(module.weight)

    def embed_audio(self, audio_ids: torch.Tensor) -> torch.Tensor:
        return self.audio_embed(audio_ids + self.offsets).sum(dim=-2)

    def forward(self, input_ids, audio_ids, attention_mask=None, position_ids=None, past_key_values=None,
                labels=None, audio_labels=None):
        audio_out_mask = input_ids == self.config.audio_out_token_idx
        embeds, audio_mask = self.embed(input_ids, audio_ids, self.embed_audio)
        out = AudioModelOutput(self.decode(embeds, attention_mask, position_ids, past_key_values), audio_mask,
                               audio_out_mask, past_key_values)
        if labels is not None:
            out.loss_sums = head_losses(out.hidden_states, audio_out_mask, labels, audio_labels, no_text_head,
                                        self.audio_head)
        return out

    def audio_logits(self, hidden):
        return self.audio_head(hidden)

    def text_logits(self, hidden):
        return no_text_logits(hidden, self.config.vocab_size)


class PlainRenderer:
    def __init__(self, tokenizer, num_codebooks: int) -> None:
        self.tokenizer, self.num_codebooks = tokenizer, num_codebooks
        self.ids = token_ids(tokenizer)
        self.pad_id = self.ids["pad_token_id"]
        structural = set(self.ids.values())
        self._encode = lru_cache(maxsize=1024)(lambda text: encode_text(tokenizer, text, structural))

    def _prompt(self, utt: Utterance, prompt: PromptConfig) -> RenderedSample:
        ids, segments = [self.ids["bos_token_id"]], []
        if utt.ref_codes is not None:
            ref = torch.as_tensor(np.asarray(utt.ref_codes)).long()
            ids += [self.ids["audio_in_token_idx"]] * segment_positions(ref.shape[1], self.num_codebooks)
            segments.append(AudioSegment(ref, is_output=False, trained=False))
        ids += [*self._encode(normalize_arabic(utt.text, prompt.text)), self.ids["audio_out_bos_token_id"]]
        return RenderedSample(ids, [IGNORE_INDEX] * len(ids), segments)

    def render(self, utt: Utterance, prompt: PromptConfig) -> RenderedSample:
        sample = self._prompt(utt, prompt)
        codes = torch.as_tensor(np.asarray(utt.codes)).long()
        rows = segment_positions(codes.shape[1], self.num_codebooks)
        sample.input_ids += [self.ids["audio_out_token_idx"]] * rows
        sample.labels += [IGNORE_INDEX] * rows
        sample.segments.append(AudioSegment(codes, is_output=True, trained=True))
        return sample

    def collator(self, cfg: CollatorConfig) -> Collator:
        return Collator(self.pad_id, cfg)

    def generation_prompt(self, utt: Utterance, stream_bos: int, stream_eos: int,
                          prompt: PromptConfig) -> tuple[list[int], torch.Tensor]:
        sample = self._prompt(utt, prompt)
        rows = [delay_segment_input(s.codes, stream_bos, stream_eos).T for s in sample.segments]
        rows.append(torch.full((1, self.num_codebooks), stream_bos, dtype=torch.long))  # the forced all-BOS row
        return sample.input_ids + [self.ids["audio_out_token_idx"]], torch.cat(rows)


# ---- its one checkpoint layout: config.json + safetensors under the model's own names ----------------
def reads_checkpoint(config: dict) -> bool:
    return config.get("model_type") == MODEL_TYPE


def checkpoint_config(directory: Path, config: dict, ids: dict[str, int] | None = None) -> PlainAudioConfig:
    if ids is None and (tokenizer := folder_tokenizer(directory)) is not None:
        ids = token_ids(tokenizer)
    return PlainAudioConfig.from_dict(config, ids)


def checkpoint_state_dict(directory: Path, config, shapes: dict, meta: bool = False) -> tuple[dict, str]:
    sd = read_state_dict(directory, meta=meta)
    check_names_and_shapes(directory, "plain", sd, shapes, sorted(set(shapes) - set(sd)),
                           sorted(set(sd) - set(shapes)))
    return sd, "plain"


def save_checkpoint(state: dict, config: PlainAudioConfig, directory: Path, layout: str = "plain",
                    init: Path | None = None, max_shard_size: str = "5GB") -> Path:
    if layout != "plain":
        raise ValueError(f"unknown layout {layout!r}")
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_config(directory, config.to_dict())
    write_state_dict(state, directory, max_shard_size)
    return Path(directory)


FAMILY = ModelFamily(
    name="plain_llama_audio",
    model_cls=PlainAudioModel,
    config_cls=PlainAudioConfig,
    fresh_config=fresh_config,
    tiny_config=tiny_config,
    released_config=lambda: tiny_config(vocab_size=32000, hidden_size=256, intermediate_size=512),
    config_to_dict=PlainAudioConfig.to_dict,
    config_from_dict=PlainAudioConfig.from_dict,
    token_ids=token_ids,
    special_tokens=tuple(TOKENS.values()),
    make_renderer=PlainRenderer,
    decoding_state=DelayPatternState,
    reads_checkpoint=reads_checkpoint,
    checkpoint_config=checkpoint_config,
    checkpoint_state_dict=checkpoint_state_dict,
    checkpoint_audio_spec=lambda config: None,
    export_layouts=("plain",),
    save_checkpoint=save_checkpoint,
    lora_groups={"attention": r"self_attn\.(q|k|v|o)_proj", "mlp": r"mlp\.(gate|up|down)_proj"},
    lora_fully_trained={"train_audio_embeddings": ("audio_embed",), "train_audio_head": ("audio_head",)},
    audio_parameters=("audio_embed.", "audio_head."),
)
