"""Higgs TTS 3 decoding: its prompt for a request, and its stopping rule on top of the delay-pattern state.

The prompt ends with `<|audio|>`, whose hidden state gives the first row (there is no all-BOS column in the
sequence; `DelayPatternState` keeps one as column 0 only for bookkeeping, it is never fed). Each step then:

- during the first K steps, codebooks above the step index are forced to BOC (the delay pattern's lower
  triangle, as in v2), and EOC is not looked at;
- afterwards, the first row whose codebook 0 is EOC starts a countdown of K-2 more rows; the row that ends
  the countdown is the last one. No codebook is forced to EOC: a finished segment is T+K-1 rows whose last
  row still carries codebook K-1's last code.
"""

from __future__ import annotations

import numpy as np
import torch

from higgs_ds.data.delay_pattern import revert_delay_pattern
from higgs_ds.data.render_tts3 import Tts3Renderer, delayed_rows
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.inference.delay import DelayPatternState


class Tts3DelayState(DelayPatternState):
    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.clone()
        j = len(self.columns)  # this row is step j-1 of the segment
        if j < self.k:
            tokens[:, self._rows >= j] = self.bos
        active = ~self.finished
        counting = active & (self.remaining >= 0)
        self.remaining = torch.where(counting, self.remaining - 1, self.remaining)
        starts = active & ~counting & (tokens[:, 0] == self.eos) if j > self.k else torch.zeros_like(active)
        self.remaining = torch.where(starts, torch.full_like(self.remaining, max(self.k - 2, 0)), self.remaining)
        ends = active & (self.remaining == 0) & (counting | starts)
        tokens = torch.where(self.finished[:, None], torch.full_like(tokens, self.eos), tokens)
        self.length = torch.where(active, self.length + 1, self.length)
        self.finished = self.finished | ends
        self.columns.append(tokens)
        return tokens

    def segment_codes(self, delayed: torch.Tensor, finished: bool, codebook_size: int) -> torch.Tensor:
        """[K, 1 + rows] (bookkeeping BOC column first) -> codec codes [K, rows - K + 1], clipped; for an
        unfinished segment the frames whose rows are all there."""
        rows = delayed[:, 1:]
        if rows.shape[1] < self.k:
            return delayed.new_zeros((self.k, 0))
        return revert_delay_pattern(rows).clip(0, codebook_size - 1)


def tts3_prompt(renderer: Tts3Renderer, text: str, ref_text: str | None, ref_codes, stream_bos: int,
                stream_eos: int, prompt: PromptConfig | None = None) -> tuple[list[int], torch.Tensor]:
    """(ids ending with `<|audio|>`, audio rows of the reference [T_ref+K-1, K] or [0, K])."""
    k = renderer.num_codebooks
    utt = Utterance(id="request", text=text, codes=np.zeros((k, 0), dtype=np.int64), ref_text=ref_text,
                    ref_codes=ref_codes)
    rendered = renderer.prompt(utt, prompt or PromptConfig())
    rows = [delayed_rows(s.codes, stream_bos, stream_eos) for s in rendered.segments]
    return rendered.input_ids, torch.cat(rows) if rows else torch.zeros((0, k), dtype=torch.long)
