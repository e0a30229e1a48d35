"""Higgs TTS 3 decoding: its stopping rule on top of the delay-pattern state.

The prompt ends with `<|audio|>`, whose hidden state gives the first row (there is no all-BOS column in the
sequence; `DelayPatternState` keeps one as column 0 only for bookkeeping, it is never fed). Each step then:

- during the first K steps, codebooks above the step index are forced to BOC (the delay pattern's lower
  triangle, as in v2), and EOC is not looked at;
- afterwards, the first row whose codebook 0 is EOC starts a countdown of K-2 more rows; the row that ends
  the countdown is the last one. No codebook is forced to EOC: a finished segment is T+K-1 rows whose last
  row still carries codebook K-1's last code.
"""

from __future__ import annotations

import torch

from higgs_ds.data.delay_pattern import revert_delay_pattern
from higgs_ds.models.delay_decoding import DelayPatternState


class Tts3DelayState(DelayPatternState):
    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.clone()
        forced = torch.zeros_like(tokens, dtype=torch.bool)  # BOC in the first rows; EOC is sampled, never forced
        j = len(self.columns)  # this row is step j-1 of the segment
        if j < self.k:
            forced[:, self._rows >= j] = True
            tokens[:, self._rows >= j] = self.bos
        active = ~self.finished
        counting = active & (self.remaining >= 0)
        self.remaining = torch.where(counting, self.remaining - 1, self.remaining)
        starts = active & ~counting & (tokens[:, 0] == self.eos) if j > self.k else torch.zeros_like(active)
        self.remaining = torch.where(starts, torch.full_like(self.remaining, max(self.k - 2, 0)), self.remaining)
        ends = active & (self.remaining == 0) & (counting | starts)
        tokens = torch.where(self.finished[:, None], torch.full_like(tokens, self.eos), tokens)
        self._record(tokens, active, forced)
        self.finished = self.finished | ends
        return tokens

    def segment_codes(self, delayed: torch.Tensor, finished: bool, codebook_size: int) -> torch.Tensor:
        """[K, 1 + rows] (bookkeeping BOC column first) -> codec codes [K, rows - K + 1], clipped; for an
        unfinished segment the frames whose rows are all there."""
        rows = delayed[:, 1:]
        if rows.shape[1] < self.k:
            return delayed.new_zeros((self.k, 0))
        return revert_delay_pattern(rows).clip(0, codebook_size - 1)
