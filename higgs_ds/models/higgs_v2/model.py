"""Higgs Audio v2 DualFFN decoder, built from transformers' Llama parts.

Module names follow Boson's original checkpoint (`embed_tokens`, `layers.N.audio_mlp`,
`audio_codebook_embeddings`, `audio_decoder_proj.{text,audio}_lm_head`), so a state dict loads
without renaming. The model knows nothing of parallelism: every module is called on every step,
with empty tensors when a batch has no audio, which is what ZeRO-3 needs.

Inputs are already expanded (one position per audio frame); see `HiggsAudioModel.forward`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from higgs_ds import ops
from higgs_ds.models.base_model import AudioModel, AudioModelOutput, position_ids_from_mask
from higgs_ds.models.heads import LinearWithLoss
from higgs_ds.models.higgs_v2.config import HiggsAudioConfig
from higgs_ds.models.loss import head_losses


class DualFFNDecoderLayer(nn.Module):
    """Shared attention; each token then takes the text or the audio MLP (with its own norms).

    A fast-forward layer (`dual_ffn_fast_forward`, layer not listed in `audio_dual_ffn_layers`) has
    only the text modules: audio tokens are masked out of its attention and skip it unchanged.
    """

    def __init__(self, config: HiggsAudioConfig, layer_idx: int):
        super().__init__()
        text_cfg = config.text_config
        self.fast_forward = not config.is_dual_ffn_layer(layer_idx)
        self.self_attn = LlamaAttention(text_cfg, layer_idx)
        self.mlp = LlamaMLP(text_cfg)
        self.input_layernorm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)
        if not self.fast_forward:
            self.audio_mlp = LlamaMLP(text_cfg)
            self.audio_input_layernorm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)
            self.audio_post_attention_layernorm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)

    def forward(self, hidden, audio_mask, attn_mask, text_only_attn_mask, position_embeddings,
                past_key_values=None):
        if self.fast_forward:
            return self._forward_fast_forward(hidden, audio_mask, text_only_attn_mask, position_embeddings,
                                              past_key_values)
        mask = audio_mask.unsqueeze(-1)
        normed = torch.where(mask, self.audio_input_layernorm(hidden), self.input_layernorm(hidden))
        attn_out, _ = self.self_attn(normed, position_embeddings=position_embeddings, attention_mask=attn_mask,
                                     past_key_values=past_key_values)
        hidden = hidden + attn_out
        return ops.routed_ffn(hidden, audio_mask, self.post_attention_layernorm, self.mlp,
                              self.audio_post_attention_layernorm, self.audio_mlp)

    def _forward_fast_forward(self, hidden, audio_mask, text_only_attn_mask, position_embeddings,
                              past_key_values):
        attn_out, _ = self.self_attn(self.input_layernorm(hidden), position_embeddings=position_embeddings,
                                     attention_mask=text_only_attn_mask, past_key_values=past_key_values)
        out = hidden + attn_out
        out = out + self.mlp(self.post_attention_layernorm(out))
        return torch.where(audio_mask.unsqueeze(-1), hidden, out)


class AudioDecoderProj(nn.Module):
    def __init__(self, config: HiggsAudioConfig):
        super().__init__()
        h = config.hidden_size
        self.text_lm_head = LinearWithLoss(h, config.vocab_size)
        self.audio_lm_head = LinearWithLoss(h, config.audio_num_codebooks * config.codebook_rows,
                                            num_codebooks=config.audio_num_codebooks)


class HiggsAudioModel(AudioModel):
    def __init__(self, config: HiggsAudioConfig):
        super().__init__()
        self.config = config
        text_cfg = config.text_config
        self.embed_tokens = nn.Embedding(text_cfg.vocab_size, text_cfg.hidden_size)
        self.audio_codebook_embeddings = nn.Embedding(config.audio_num_codebooks * config.codebook_rows,
                                                      text_cfg.hidden_size)
        self.layers = nn.ModuleList(DualFFNDecoderLayer(config, i) for i in range(text_cfg.num_hidden_layers))
        self.norm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=text_cfg)
        self.audio_decoder_proj = AudioDecoderProj(config)
        self.register_buffer("codebook_offsets", torch.arange(config.audio_num_codebooks) * config.codebook_rows,
                             persistent=False)
        self.gradient_checkpointing = False
        self.reset_parameters()

    def init_module(self, module: nn.Module) -> None:
        """Initialise one module's own parameters (callers gather them first under ZeRO-3)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.text_config.initializer_range)
        elif isinstance(module, LlamaRMSNorm):
            nn.init.ones_(module.weight)

    def embed_audio(self, audio_ids: torch.Tensor) -> torch.Tensor:
        """Sum of per-codebook embeddings: audio_ids [N, K] -> [N, H]. Runs on N=0 as well."""
        return self.audio_codebook_embeddings(audio_ids + self.codebook_offsets).sum(dim=-2)

    def forward(self, input_ids, audio_ids, attention_mask=None, position_ids=None, past_key_values=None,
                labels=None, audio_labels=None):
        """input_ids [B, S]: text ids, with `<|AUDIO|>` / `<|AUDIO_OUT|>` at every audio-in / audio-out
        frame position. audio_ids [N_audio, K]: the (delay-patterned) codes of those positions in
        row-major order. attention_mask [B, S]: 1 for real tokens (right padding in training).
        labels [B, S] / audio_labels [N_out, K] (position-aligned, unshifted): when given, the output
        carries the fused head + loss sums (`higgs_ds.models.loss.head_losses`), computed inside this
        forward so ZeRO-3 sees one forward per step.
        """
        cfg = self.config
        audio_out_mask = input_ids == cfg.audio_out_token_idx
        audio_mask = audio_out_mask | (input_ids == cfg.audio_in_token_idx)
        embeds = self.embed_tokens(input_ids)
        audio_embeds = self.embed_audio(audio_ids).to(embeds.dtype)
        embeds = embeds.masked_scatter(audio_mask.unsqueeze(-1), audio_embeds)

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask, past_len)
        attn_mask, text_only_mask = self._attention_masks(attention_mask.bool(), audio_mask, past_len)
        position_embeddings = self.rotary_emb(embeds, position_ids)

        hidden = embeds
        for layer in self.layers:
            args = (hidden, audio_mask, attn_mask, text_only_mask, position_embeddings, past_key_values)
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
            else:
                hidden = layer(*args)
        out = AudioModelOutput(self.norm(hidden), audio_mask, audio_out_mask, past_key_values)
        if labels is not None:
            heads = self.audio_decoder_proj
            out.loss_sums = head_losses(out.hidden_states, audio_out_mask, labels, audio_labels, heads.text_lm_head,
                                        heads.audio_lm_head)
        return out

    def _attention_masks(self, key_valid, audio_mask, past_len):
        """Boolean [B, 1, S_q, S_k] masks (True = attend): causal + padding, and for fast-forward
        layers the same restricted to text queries and keys (audio queries see only themselves)."""
        s_k = key_valid.shape[1]
        s_q = s_k - past_len
        q_pos = torch.arange(past_len, s_k, device=key_valid.device)
        k_pos = torch.arange(s_k, device=key_valid.device)
        causal = k_pos[None, :] <= q_pos[:, None]
        full = causal[None] & key_valid[:, None, :]
        if all(not layer.fast_forward for layer in self.layers):
            return full.unsqueeze(1), None
        if past_len:
            raise ValueError("KV-cache decoding needs every layer to be DualFFN (no fast-forward layers)")
        text = ~audio_mask
        diagonal = torch.eye(s_q, s_k, dtype=torch.bool, device=key_valid.device)
        text_only = (full & text[:, :, None] & text[:, None, :]) | diagonal[None]
        return full.unsqueeze(1), text_only.unsqueeze(1)

    # ---- heads ----------------------------------------------------------------------------------
    def text_logits(self, hidden):
        return self.audio_decoder_proj.text_lm_head(hidden)

    def audio_logits(self, hidden):
        """hidden [N, H] at audio-out positions -> [N, K, codebook_size + 2]."""
        return self.audio_decoder_proj.audio_lm_head(hidden)
