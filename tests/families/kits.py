"""What the family-contract tests need of each family besides its `ModelFamily`: a tokenizer and a reference
implementation of its forward, written independently of ours (transformers' own models, plus the audio
embedding and head spelled out here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import HiggsAudioV2ForConditionalGeneration, LlamaModel, Qwen3Model

from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.models import FreshModelShape, get_family, register_family
from higgs_ds.models.higgs_v2.checkpoint import ours_to_hf
from tests.data.synthetic import SPEC
from tests.families import plain_llama
from tests.tts3_utils import tiny_tts3_tokenizer

register_family(plain_llama.FAMILY)  # the test family joins through the registry's public API alone


def _audio_mask(cfg, ids):
    return (ids == cfg.audio_in_token_idx) | (ids == cfg.audio_out_token_idx)


def _fused_audio_embedding(table, cfg, audio_ids):
    """sum_c W[c*C + code_c]: every family's audio embedding of one delayed row."""
    return table[audio_ids + torch.arange(cfg.audio_num_codebooks) * cfg.codebook_rows].sum(dim=1)


def v2_reference(model, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' HiggsAudioV2ForConditionalGeneration with our weights: it marks every audio frame with one
    placeholder id and takes codes as [B, T, K]."""
    cfg = model.config
    port = HiggsAudioV2ForConditionalGeneration(cfg.to_hf_port_config(), use_text_head=True).eval()
    result = port.load_state_dict(ours_to_hf(model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids = batch["input_ids"]
    is_audio = _audio_mask(cfg, ids)
    per_row = is_audio.sum(1)
    t = int(per_row.max())
    audio = torch.zeros(ids.shape[0], t, cfg.audio_num_codebooks, dtype=torch.long)
    frames = torch.arange(t)[None] < per_row[:, None]
    audio[frames] = batch["audio_ids"]
    inputs = dict(input_ids=ids.masked_fill(is_audio, cfg.audio_out_token_idx), attention_mask=batch["attention_mask"],
                  audio_input_ids=audio, audio_input_ids_mask=frames)
    audio_logits = port(**inputs).logits.view(*ids.shape, cfg.audio_num_codebooks, -1)
    return audio_logits, port.text_lm_head(port.model(**inputs).last_hidden_state)


def tts3_reference(model, batch) -> tuple[torch.Tensor, None]:
    """The release's math on transformers' Qwen3Model: audio rows replace the text embedding by the fused
    table's sum; the head is linear(final_norm(h), W) viewed as [.., K, C]."""
    cfg = model.config
    qwen = Qwen3Model(cfg.text_config).eval()
    qwen.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("audio_table.")})
    table = model.audio_table.weight
    ids = batch["input_ids"]
    embeds = qwen.embed_tokens(ids)
    embeds[_audio_mask(cfg, ids)] = _fused_audio_embedding(table, cfg, batch["audio_ids"])
    hidden = qwen(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
    return (hidden @ table.T).view(*hidden.shape[:-1], cfg.audio_num_codebooks, cfg.codebook_rows), None


def plain_reference(model, batch) -> tuple[torch.Tensor, None]:
    """transformers' LlamaModel with our backbone weights, the summed embedding and the untied head."""
    cfg = model.config
    llama = LlamaModel(cfg.text_config).eval()
    llama.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("audio_")})
    ids = batch["input_ids"]
    embeds = llama.embed_tokens(ids)
    embeds[_audio_mask(cfg, ids)] = _fused_audio_embedding(model.audio_embed.weight, cfg, batch["audio_ids"])
    hidden = llama(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
    logits = hidden @ model.audio_head.weight.T
    return logits.view(*hidden.shape[:-1], cfg.audio_num_codebooks, cfg.codebook_rows), None


@dataclass(frozen=True)
class FamilyKit:
    name: str  # the registry key
    tokenizer: Callable  # (the demo tokenizer) -> a tokenizer with the family's special tokens
    reference: Callable  # (model, batch) -> (audio logits [B, S, K, C], text logits [B, S, V] or None)

    @property
    def family(self):
        return get_family(self.name)


# The model shape the family-wide tests build every family at (contract, preference log-probs).
TINY_SHAPE = FreshModelShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2)



def tiny_model(family, tok, seed: int = 0, shape: FreshModelShape = TINY_SHAPE):
    """A fresh model of `family` for the test audio spec, its weights drawn after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return family.build_model(family.fresh_config(shape, tok, SPEC))


def two_utterances(seed: int) -> list[Utterance]:
    """A zero-shot and a voice-clone utterance of random codes, in both scripts."""
    rng = np.random.default_rng(seed)
    codes = lambda n: rng.integers(0, SPEC.codebook_size, (SPEC.num_codebooks, n))  # noqa: E731
    return [Utterance("zero-shot", "hello world", codes(7)),
            Utterance("clone", "مرحبا بكم", codes(5), ref_text="one two", ref_codes=codes(4))]


def render_batch(family, tok, model, utts: list[Utterance]) -> dict:
    """The training batch the family's renderer and collator make of `utts`."""
    renderer = family.make_renderer(tok, SPEC.num_codebooks)
    return renderer.collator(CollatorConfig.from_model_config(model.config))(
        [renderer.render(u, PromptConfig()) for u in utts])


KITS = [
    FamilyKit("higgs_v2_dualffn", lambda demo: demo, v2_reference),
    FamilyKit("higgs_tts3", lambda demo: tiny_tts3_tokenizer(), tts3_reference),
    FamilyKit(plain_llama.FAMILY.name, lambda demo: demo, plain_reference),
]
