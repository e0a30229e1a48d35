"""Token selection for the audio head: temperature, top-k, top-p (in transformers' order) and
repetition-aware sampling (RAS), applied independently to every (prompt, codebook) row."""

from __future__ import annotations

import torch

from higgs_ds.inference.config import GenerationConfig


def filter_logits(logits: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """[..., V] float logits -> scores with temperature applied and filtered entries at -inf."""
    scores = logits / cfg.temperature
    if cfg.top_k:
        k = min(cfg.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        # Keep the smallest prefix of the sorted distribution whose mass reaches top_p (at least one token).
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= cfg.top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def _multinomial(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    probs = scores.softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def select_tokens(logits: torch.Tensor, cfg: GenerationConfig, history: torch.Tensor | None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, K, V] (float32) -> tokens [B, K].

    history [B, K, W]: the segment's latest columns (up to ``ras_window``) for RAS; None or W=0: no RAS.
    """
    tokens = logits.argmax(dim=-1) if cfg.greedy else _multinomial(filter_logits(logits, cfg), generator)
    if cfg.ras_window and history is not None and history.shape[-1] > 0:
        repeats = (history[..., -cfg.ras_window:] == tokens.unsqueeze(-1)).sum(dim=-1)
        redraw = repeats >= cfg.ras_max_repeats
        if redraw.any():
            tokens = torch.where(redraw, _multinomial(logits, generator), tokens)
    return tokens
