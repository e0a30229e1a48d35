"""Higgs TTS 3: a plain Qwen3 decoder (transformers' parts) with one tied multi-codebook audio table.

The audio table W [K*C, H] (C = codes + BOC + EOC) is both the audio embedding and the audio head:
- a position holding a delayed row of codes is embedded as `sum_c W[c*C + code_c]` (no scale), and this
  *replaces* its text embedding;
- the head is `linear(final_norm(h), W)` viewed as [.., K, C].
There is no text head and no text loss. The `<|audio|>` position predicts the first delayed target row,
each target row the next one.

The forward contract is the DualFFN model's (`higgs_ds.model.modeling`): expanded `input_ids` with
placeholder ids at audio positions, `audio_ids` [N, K] for those positions in row-major order, hidden
states out, losses computed inside the forward. `audio_out_mask` marks the rows of the audio head: the
`<|audio|>` positions and the target rows (`HiggsTTS3Config.audio_head_token_ids`), so audio labels
have one row per such position. Every module is called on every step, on empty tensors when a batch has
no audio, which is what ZeRO-3 needs; the model knows nothing of parallelism.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding

from higgs_ds import ops
from higgs_ds.model.loss import head_losses
from higgs_ds.model.modeling import HiggsAudioModel, HiggsAudioOutput
from higgs_ds.model.tts3_config import HiggsTTS3Config


class TiedAudioTable(nn.Module):
    """The fused audio table, used as embedding and head. Both uses go through this module's forward, so
    ZeRO-3 gathers the one weight for each of them."""

    def __init__(self, num_codebooks: int, rows: int, hidden_size: int):
        super().__init__()
        self.num_codebooks, self.rows = num_codebooks, rows
        self.weight = nn.Parameter(torch.empty(num_codebooks * rows, hidden_size))
        self.register_buffer("offsets", torch.arange(num_codebooks) * rows, persistent=False)

    def forward(self, codes=None, hidden=None, targets=None):
        """codes [N, K] -> embeddings [N, H]; or hidden [.., H] -> logits [.., K, C]; or with targets [N, K]
        the fused head + per-codebook CE sums (`higgs_ds.ops`), without materialising the logits."""
        if codes is not None:
            return F.embedding(codes + self.offsets, self.weight).sum(dim=-2)
        if targets is not None:
            return ops.codebook_linear_cross_entropy(hidden, self.weight, targets)
        return F.linear(hidden, self.weight).view(*hidden.shape[:-1], self.num_codebooks, self.rows)


def no_text_head(hidden: torch.Tensor, targets: torch.Tensor):
    """TTS 3 trains no text: zero sums that keep the graph; any text target is a data error."""
    if targets.numel():
        raise ValueError(f"{targets.numel()} text labels reached the Higgs TTS 3 model, which has no text head "
                         f"(render its samples with the TTS 3 renderer: every text label is -100)")
    zero = hidden.float().sum() * 0.0
    return zero, zero.detach(), zero.detach()


class HiggsTTS3Model(nn.Module):
    def __init__(self, config: HiggsTTS3Config):
        super().__init__()
        self.config = config
        tc = config.text_config
        self.embed_tokens = nn.Embedding(tc.vocab_size, tc.hidden_size)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(tc, i) for i in range(tc.num_hidden_layers))
        self.norm = Qwen3RMSNorm(tc.hidden_size, eps=tc.rms_norm_eps)
        self.rotary_emb = Qwen3RotaryEmbedding(config=tc)
        self.audio_table = TiedAudioTable(config.audio_num_codebooks, config.codebook_rows, tc.hidden_size)
        self.register_buffer("head_token_ids", torch.tensor(config.audio_head_token_ids), persistent=False)
        self.gradient_checkpointing = False
        self.reset_parameters()

    reset_parameters = HiggsAudioModel.reset_parameters  # init_module on every module

    def init_module(self, module: nn.Module) -> None:
        """Initialise one module's own parameters (callers gather them first under ZeRO-3)."""
        if isinstance(module, (nn.Linear, nn.Embedding, TiedAudioTable)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.text_config.initializer_range)
        elif isinstance(module, Qwen3RMSNorm):
            nn.init.ones_(module.weight)

    def embed_audio(self, audio_ids: torch.Tensor) -> torch.Tensor:
        """audio_ids [N, K] -> [N, H]. Runs on N=0 as well."""
        return self.audio_table(codes=audio_ids)

    def audio_head_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] bool: positions whose hidden state the audio head reads."""
        return torch.isin(input_ids, self.head_token_ids)

    def forward(self, input_ids, audio_ids, attention_mask=None, position_ids=None, past_key_values=None,
                labels=None, audio_labels=None):
        """As `HiggsAudioModel.forward`; `audio_labels` has one row per audio-head position (the `<|audio|>`
        position's row, never a target itself, then the target rows)."""
        cfg = self.config
        audio_out_mask = self.audio_head_mask(input_ids)
        audio_mask = (input_ids == cfg.audio_out_token_idx) | (input_ids == cfg.audio_in_token_idx)
        embeds = self.embed_tokens(input_ids)
        embeds = embeds.masked_scatter(audio_mask.unsqueeze(-1), self.embed_audio(audio_ids).to(embeds.dtype))

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
        attn_mask = causal_padding_mask(attention_mask.bool(), past_len)
        position_embeddings = self.rotary_emb(embeds, position_ids)

        hidden = embeds
        for layer in self.layers:
            kwargs = dict(attention_mask=attn_mask, position_embeddings=position_embeddings,
                          past_key_values=past_key_values)
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(layer, hidden, use_reentrant=False, **kwargs)
            else:
                hidden = layer(hidden, **kwargs)
        out = HiggsAudioOutput(self.norm(hidden), audio_mask, audio_out_mask, past_key_values)
        if labels is not None:
            out.loss_sums = head_losses(out.hidden_states, audio_out_mask, labels, audio_labels, no_text_head,
                                        self.audio_head)
        return out

    def audio_head(self, hidden, targets):
        return self.audio_table(hidden=hidden, targets=targets)

    def audio_logits(self, hidden):
        """hidden [N, H] at audio-head positions -> [N, K, codebook_size + 2]."""
        return self.audio_table(hidden=hidden)

    def text_logits(self, hidden):
        """No text head: text is never a target, so only empty rows (e.g. a prediction report's) come here."""
        if hidden.numel():
            raise NotImplementedError("Higgs TTS 3 has no text head")
        return hidden.new_zeros((*hidden.shape[:-1], self.config.vocab_size))


def causal_padding_mask(key_valid: torch.Tensor, past_len: int) -> torch.Tensor:
    """Boolean [B, 1, S_q, S_k] mask (True = attend): causal, and padded keys hidden."""
    s_k = key_valid.shape[1]
    q_pos = torch.arange(past_len, s_k, device=key_valid.device)
    causal = torch.arange(s_k, device=key_valid.device)[None, :] <= q_pos[:, None]
    return (causal[None] & key_valid[:, None, :]).unsqueeze(1)



def model_for(config):
    """The model of either generation's config (`config.arch`)."""
    return HiggsTTS3Model(config) if config.arch == "higgs_tts3" else HiggsAudioModel(config)
