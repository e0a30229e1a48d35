"""`GenerationConfig`: the decoding knobs, with Higgs Audio v2's inference defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationConfig:
    """How audio codes are decoded.

    ``temperature == 0`` is greedy (argmax). Repetition-aware sampling (RAS) works as upstream: when a
    codebook's new token already occurs ``ras_max_repeats`` times in that codebook's last
    ``ras_window`` columns, it is re-drawn from the raw distribution (no temperature, top-k or top-p).
    Upstream applies RAS in greedy mode too; set ``ras_window=0`` for fully deterministic decoding.
    """

    max_new_frames: int = 1500  # sampled delay-pattern columns (25 per second of audio), BOS column excluded
    temperature: float = 1.0
    top_k: int | None = 50  # None or 0: off
    top_p: float | None = 0.95  # None or 1.0: off
    ras_window: int = 7  # 0: off
    ras_max_repeats: int = 2
    seed: int | None = None  # seeds the sampling generator; None: torch's global RNG

    def __post_init__(self) -> None:
        if self.max_new_frames < 1:
            raise ValueError(f"GenerationConfig.max_new_frames={self.max_new_frames} must be >= 1")
        if not 0 <= self.temperature < math.inf:  # NaN fails every comparison
            raise ValueError(f"GenerationConfig.temperature={self.temperature} must be finite and >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"GenerationConfig.top_k={self.top_k} must be >= 0 (0 or None = off)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationConfig.top_p={self.top_p} must be in (0, 1]")
        if self.ras_window < 0 or self.ras_max_repeats < 1:
            raise ValueError(f"GenerationConfig: ras_window={self.ras_window} must be >= 0 and "
                             f"ras_max_repeats={self.ras_max_repeats} >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
