"""Higgs TTS 3: a plain Qwen3 decoder (transformers' parts) with one tied multi-codebook audio table.

The audio table W [K*C, H] (C = codes + BOC + EOC) is both the audio embedding and the audio head:
- a position holding a delayed row of codes is embedded as `sum_c W[c*C + code_c]` (no scale), and this
  *replaces* its text embedding;
- the head is `linear(final_norm(h), W)` viewed as [.., K, C].
There is no text head and no text loss. The `<|audio|>` position predicts the first delayed target row,
each target row the next one.

The forward contract is every family's (`higgs_ds.models.base_model`). `audio_out_mask` marks the rows of
the audio head: the `<|audio|>` positions and the target rows (`HiggsTTS3Config.audio_head_token_ids`), so
audio labels have one row per such position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding

from higgs_ds import ops
from higgs_ds.models.base_model import AudioModel, AudioModelOutput
from higgs_ds.models.heads import no_text_head, no_text_logits
from higgs_ds.models.higgs_tts3.config import HiggsTTS3Config
from higgs_ds.models.loss import head_losses


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


class HiggsTTS3Model(AudioModel):
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
        """The contract of `higgs_ds.models.base_model`; `audio_labels` has one row per audio-head position
        (the `<|audio|>` position's row, never a target itself, then the target rows)."""
        audio_out_mask = self.audio_head_mask(input_ids)
        embeds, audio_mask = self.embed(input_ids, audio_ids, self.embed_audio)
        hidden = self.decode(embeds, attention_mask, position_ids, past_key_values)
        out = AudioModelOutput(hidden, audio_mask, audio_out_mask, past_key_values)
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
        return no_text_logits(hidden, self.config.vocab_size)
