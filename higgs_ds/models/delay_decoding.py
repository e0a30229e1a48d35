"""The delay-pattern state machine of generation, with Boson's stopping rule (`_sample_audio_tokens`); a family
with another rule subclasses it (`ModelFamily.decoding_state`).

A generated segment is the delayed ``[BOS | codes | EOS]`` of the training data,
built one column at a time:

- column 0 is all stream-BOS; it is part of the prompt, never sampled;
- sampled column j < K has rows k >= j forced to BOS (the lower triangle);
- when a column first holds a stream-EOS, at row e, rows < e of that column are forced to EOS, and
  each following column forces one more row (rows < e+i at i columns later): the EOS diagonal. The
  segment ends after K-e-1 such columns, so a well-trained model (e = 0) ends with the all-EOS column
  and the segment has T+K+1 columns for T frames.

Codes are recovered with ``revert_delay_pattern(columns).clip(0, C-1)[:, 1:-1]`` as upstream.
"""

from __future__ import annotations

import torch

from higgs_ds.data.delay_pattern import revert_delay_pattern, strip_delayed_segment


class DelayPatternState:
    """Per-prompt bookkeeping of one batch of generated segments."""

    def __init__(self, batch_size: int, num_codebooks: int, bos: int, eos: int, device):
        self.k, self.bos, self.eos = num_codebooks, bos, eos
        self.columns: list[torch.Tensor] = [torch.full((batch_size, num_codebooks), bos, dtype=torch.long,
                                                       device=device)]
        self.remaining = torch.full((batch_size,), -1, dtype=torch.long, device=device)  # -1: no EOS yet
        self.finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.length = torch.ones(batch_size, dtype=torch.long, device=device)  # columns that belong to the segment
        self._rows = torch.arange(num_codebooks, device=device)
        self.free: list[torch.Tensor] = [torch.zeros((batch_size, num_codebooks), dtype=torch.bool, device=device)]

    @property
    def last_column(self) -> torch.Tensor:
        return self.columns[-1]

    def history(self, window: int) -> torch.Tensor:
        """[B, K, W] the latest ``window`` columns (for repetition-aware sampling)."""
        return torch.stack(self.columns[-window:], dim=-1) if window else self.columns[-1][..., :0]

    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        """Force the delay pattern onto sampled tokens [B, K], record the column and return it.
        Prompts that already finished get an all-EOS column (fed to the model, not kept)."""
        tokens = tokens.clone()
        forced = torch.zeros_like(tokens, dtype=torch.bool)
        j = len(self.columns)  # index of this column in the segment
        if j < self.k:  # lower triangle: codebook k starts at column k+1
            forced[:, self._rows >= j] = True
            tokens[:, self._rows >= j] = self.bos
        active = ~self.finished
        in_eos = active & (self.remaining >= 0)
        # Rows already on the diagonal: rows < K - remaining.
        diagonal = in_eos[:, None] & (self._rows[None, :] < (self.k - self.remaining)[:, None])
        tokens = torch.where(diagonal, torch.full_like(tokens, self.eos), tokens)
        self.remaining = torch.where(in_eos, self.remaining - 1, self.remaining)
        # First EOS of a segment, at row e: rows < e become EOS, K-e-1 columns remain.
        is_eos = tokens == self.eos
        starts = active & ~in_eos & is_eos.any(dim=-1)
        first = torch.where(is_eos, self._rows[None, :], torch.full_like(tokens, self.k)).min(dim=-1).values
        below = starts[:, None] & (self._rows[None, :] < first[:, None])
        tokens = torch.where(below, torch.full_like(tokens, self.eos), tokens)
        self.remaining = torch.where(starts, self.k - first - 1, self.remaining)
        tokens = torch.where(self.finished[:, None], torch.full_like(tokens, self.eos), tokens)
        self._record(tokens, active, forced | diagonal | below)
        self.finished = self.finished | (active & (self.remaining == 0))
        return tokens

    def _record(self, tokens: torch.Tensor, active: torch.Tensor, forced: torch.Tensor) -> None:
        """Keep a column and which of its cells were sampled (free): active prompts, cells not forced."""
        self.length = torch.where(active, self.length + 1, self.length)
        self.columns.append(tokens)
        self.free.append(active[:, None] & ~forced)

    def free_cells(self) -> list[torch.Tensor]:
        """Per prompt, bool [K, L_b] aligned with `segments()`: the cells the decoder sampled. Cells the delay
        pattern or the stopping rule forced (and column 0, the prompt's) carry no choice: a sequence's
        log-probability leaves them out (higgs_ds.train.preference.logprobs)."""
        stacked = torch.stack(self.free, dim=-1)  # [B, K, L]
        return [stacked[b, :, : int(self.length[b])] for b in range(stacked.shape[0])]

    def segment_codes(self, delayed: torch.Tensor, finished: bool, codebook_size: int) -> torch.Tensor:
        """Codec codes of one generated segment (see `codes_from_generated_segment`)."""
        return codes_from_generated_segment(delayed, finished, codebook_size)

    def segments(self) -> list[torch.Tensor]:
        """The generated delayed segments, one [K, L_b] per prompt (BOS column included)."""
        stacked = torch.stack(self.columns, dim=-1)  # [B, K, L]
        return [stacked[b, :, : int(self.length[b])] for b in range(stacked.shape[0])]


def codes_from_generated_segment(delayed: torch.Tensor, finished: bool, codebook_size: int) -> torch.Tensor:
    """Delayed segment [K, L] -> codec codes [K, T], clipped to [0, codebook_size).

    A finished segment drops its BOS and EOS frames (upstream's ``[:, 1:-1]``). An unfinished one
    (max length reached) has no EOS frame: only the BOS frame is dropped, and columns past the last
    complete frame are discarded."""
    k, length = delayed.shape
    if length < k:
        return delayed.new_zeros((k, 0))
    if finished:
        return strip_delayed_segment(delayed).clip(0, codebook_size - 1)
    return revert_delay_pattern(delayed).clip(0, codebook_size - 1)[:, 1:]
