"""Next-token-shifted text and per-codebook audio losses for Higgs Audio v2.

Labels arrive aligned to positions (not shifted). Position t predicts position t+1:
- text: hidden[t] -> labels[t+1], at every position whose next label is not -100 (this includes the
  last audio frame predicting `<|audio_eos|>`);
- audio: hidden[t] at an audio-out position -> audio_labels of position t+1 when that position is
  audio-out too. Comparing logits and labels at the same position (no shift) is the copy bug of the
  community trainer; `tests/test_loss.py` and `tests/test_label_leak.py` catch it.

Only labelled rows reach the heads, and the heads compute their CE fused (`higgs_ds.ops`), so the
[tokens, vocab] logits are never materialised. Sums and counts come back separately, so the caller
can normalise by global valid-token counts across ranks and micro-batches.

Plain tensor functions, in the order a step uses them: `target_counts` (before the forward, for the
global normaliser), `head_losses` (inside the model's forward), `combine` (after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from higgs_ds.constants import IGNORE_INDEX

# A head with a fused loss: (hidden rows [N, H], targets) -> (loss sum, valid count, correct count).
HeadLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class LossWeights:
    text: float = 1.0
    audio: float = 1.0
    codebooks: list[float] | None = None  # None: 1/K each (Boson's `audio_codebook_weights`)

    def codebook_tensor(self, k: int, device) -> torch.Tensor:
        w = self.codebooks if self.codebooks is not None else [1.0 / k] * k
        if len(w) != k:
            raise ValueError(f"loss codebook weights have {len(w)} entries, the model has {k} codebooks")
        return torch.tensor(w, dtype=torch.float32, device=device)


@dataclass
class LossSums:
    """Un-normalised loss sums, valid counts and correct-prediction counts (fp32 tensors)."""

    text_sum: torch.Tensor
    text_count: torch.Tensor
    text_correct: torch.Tensor
    audio_sum: torch.Tensor  # [K]
    audio_count: torch.Tensor  # [K]
    audio_correct: torch.Tensor  # [K]
    extra: dict = field(default_factory=dict)

    def counts(self) -> torch.Tensor:
        """[1 + K] valid counts, the vector to all-reduce for a global normaliser."""
        return torch.cat([self.text_count.view(1), self.audio_count])


def shifted_targets(labels, audio_labels, audio_out_mask):
    """Targets for next-token prediction: (text [B, S], audio [N_out, K]) aligned to the predicting
    positions. `audio_labels` [N_out, K] are the labels *of* the audio-out positions."""
    b, s = labels.shape
    text_t = torch.full_like(labels, IGNORE_INDEX)
    text_t[:, :-1] = labels[:, 1:]
    k = audio_labels.shape[-1]
    per_pos = audio_labels.new_full((b, s, k), IGNORE_INDEX)
    per_pos[audio_out_mask] = audio_labels
    next_pos = torch.full_like(per_pos, IGNORE_INDEX)
    next_pos[:, :-1] = per_pos[:, 1:]
    return text_t, next_pos[audio_out_mask]


def target_counts(batch: dict, audio_head_token_ids: int | tuple[int, ...]) -> torch.Tensor:
    """[1 + K] valid-target counts of a batch, known before the forward (for global normalisers).
    `audio_head_token_ids`: the ids of the audio head's positions (the config's `audio_head_token_ids`)."""
    ids = torch.as_tensor(audio_head_token_ids, device=batch["input_ids"].device).view(-1)
    out_mask = torch.isin(batch["input_ids"], ids)
    text_t, audio_t = shifted_targets(batch["labels"], batch["audio_labels"], out_mask)
    text = (text_t != IGNORE_INDEX).sum().view(1)
    return torch.cat([text, (audio_t != IGNORE_INDEX).sum(0)]).float()


def head_losses(hidden: torch.Tensor, audio_out_mask: torch.Tensor, labels: torch.Tensor,
                audio_labels: torch.Tensor, text_head: HeadLoss, audio_head: HeadLoss) -> LossSums:
    """Shift the targets, then run both heads with fused CE on the rows that have a target. Both heads are
    called on every step, on zero rows if need be, so ZeRO-3 ranks stay in step and gradients stay
    defined. hidden [B, S, H] (after the final norm); audio_out_mask [B, S]."""
    text_t, audio_t = shifted_targets(labels, audio_labels, audio_out_mask)
    rows = text_t != IGNORE_INDEX
    text_sum, text_count, text_correct = text_head(hidden[rows], text_t[rows])
    audio_sum, audio_count, audio_correct = audio_head(hidden[audio_out_mask], audio_t)
    return LossSums(text_sum, text_count, text_correct, audio_sum, audio_count, audio_correct)


@dataclass
class LossParts:
    loss: torch.Tensor  # what backward() sees
    text: torch.Tensor
    audio: torch.Tensor
    audio_per_codebook: torch.Tensor  # [K]


def combine(sums: LossSums, weights: LossWeights, normaliser: torch.Tensor | None = None) -> LossParts:
    """Mean CE per component. `normaliser` [1 + K] overrides the local counts (e.g. global counts,
    clamped to >= 1, divided by micro-batches x ranks, so that DeepSpeed's averaging gives the global
    mean). A component with no valid target contributes an exact 0 that keeps its gradient path."""
    counts = sums.counts().clamp(min=1.0) if normaliser is None else normaliser
    text = sums.text_sum / counts[0]
    per_cb = sums.audio_sum / counts[1:]
    audio = (per_cb * weights.codebook_tensor(per_cb.numel(), per_cb.device)).sum()
    loss = weights.text * text + weights.audio * audio
    return LossParts(loss, text, audio, per_cb)
