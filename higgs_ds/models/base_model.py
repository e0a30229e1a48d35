"""What every family's model shares: the output type, weight initialisation and the causal mask.

The forward contract (every family): `model(input_ids, audio_ids, attention_mask=None, position_ids=None,
past_key_values=None, labels=None, audio_labels=None) -> AudioModelOutput`, with expanded `input_ids`
(one position per delayed audio row, placeholder ids there), `audio_ids` [N, K] for the audio positions in
row-major order, and with labels the fused head + loss sums of `higgs_ds.models.loss.head_losses`, computed
inside the forward so that ZeRO-3 sees one forward per step. Besides: `audio_logits(hidden)` [.., K, C],
`text_logits(hidden)`, `init_module(module)`, `gradient_checkpointing`. Every module is called on every
step, on empty tensors when a batch has no audio: the model knows nothing of parallelism, and ZeRO-3
needs exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from higgs_ds.models.loss import LossSums


@dataclass
class AudioModelOutput:
    hidden_states: torch.Tensor  # [B, S, H], after the final norm
    audio_mask: torch.Tensor  # [B, S] bool: audio-in and audio-out positions
    audio_out_mask: torch.Tensor  # [B, S] bool: the rows of the audio head
    past_key_values: object | None = None
    loss_sums: LossSums | None = None


class AudioModel(nn.Module):
    """Base of the families' models: `reset_parameters` initialises every module through `init_module`,
    which ZeRO-3 callers also use one gathered module at a time."""

    def reset_parameters(self) -> None:
        for module in self.modules():
            self.init_module(module)

    def init_module(self, module: nn.Module) -> None:
        raise NotImplementedError

    def embed(self, input_ids: torch.Tensor, audio_ids: torch.Tensor, audio_embeds) -> tuple[torch.Tensor, ...]:
        """(embeddings [B, S, H], audio mask [B, S]): token embeddings, with `audio_embeds(audio_ids)` (one row
        per audio-in or audio-out position, row-major) in place of the placeholders'."""
        cfg = self.config
        audio_mask = (input_ids == cfg.audio_out_token_idx) | (input_ids == cfg.audio_in_token_idx)
        embeds = self.embed_tokens(input_ids)
        return embeds.masked_scatter(audio_mask.unsqueeze(-1), audio_embeds(audio_ids).to(embeds.dtype)), audio_mask

    def decode(self, embeds, attention_mask=None, position_ids=None, past_key_values=None) -> torch.Tensor:
        """The backbone of transformers' decoder layers (`self.layers`, called as
        `layer(hidden, attention_mask=, position_embeddings=, past_key_values=)`) with causal + padding masks,
        rotary embeddings (`self.rotary_emb`) and the final norm (`self.norm`)."""
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask, past_len)
        kwargs = dict(attention_mask=causal_padding_mask(attention_mask.bool(), past_len),
                      position_embeddings=self.rotary_emb(embeds, position_ids), past_key_values=past_key_values)
        hidden = embeds
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(layer, hidden, use_reentrant=False, **kwargs)
            else:
                hidden = layer(hidden, **kwargs)
        return self.norm(hidden)


def causal_padding_mask(key_valid: torch.Tensor, past_len: int) -> torch.Tensor:
    """Boolean [B, 1, S_q, S_k] mask (True = attend): causal, and padded keys hidden."""
    s_k = key_valid.shape[1]
    q_pos = torch.arange(past_len, s_k, device=key_valid.device)
    causal = torch.arange(s_k, device=key_valid.device)[None, :] <= q_pos[:, None]
    return (causal[None] & key_valid[:, None, :]).unsqueeze(1)


def position_ids_from_mask(attention_mask: torch.Tensor, past_len: int) -> torch.Tensor:
    """Positions counted over real tokens only (left padding gets 0), for the new positions after the cache."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
