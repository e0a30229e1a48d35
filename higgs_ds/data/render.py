"""Rendered samples, the types every family's prompt renderer produces: expanded token ids, position-aligned
text labels and the audio segments in position order. Each audio position has its own id (one position per
delayed audio row), so the rendered length is the model's sequence length; bucketing can use it directly.
The renderers themselves belong to the model families (`higgs_ds.models.<family>`); their interface is
`higgs_ds.data.renderer.Renderer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def lookup_tokens(tokenizer, tokens: dict[str, str], what: str) -> dict[str, int]:
    """name -> id of each special token string in `tokens`; a ValueError naming every one the tokenizer lacks."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.items()}
    missing = [tokens[name] for name, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} lacks the {what} special tokens "
                         f"{missing}")
    return ids


def encode_text(tokenizer, text: str, structural: set[int]) -> tuple[int, ...]:
    """`text` tokenised with ``add_special_tokens=False``; raises when it holds one of the `structural` ids."""
    ids = tuple(tokenizer.encode(text, add_special_tokens=False))
    bad = sorted({tokenizer.convert_ids_to_tokens(i) for i in ids if i in structural})
    if bad:
        raise ValueError(f"text contains the special token(s) {bad}, which would break the prompt layout: "
                         f"{text[:80]!r}")
    return ids


@dataclass
class AudioSegment:
    """One audio content piece, in position order. ``is_output``: audio the model speaks (read by the audio
    head); else audio-in (a reference). ``trained``: its audio labels count."""

    codes: torch.Tensor  # [K, T] int64
    is_output: bool
    trained: bool


@dataclass
class RenderedSample:
    input_ids: list[int]  # expanded: one position per delayed audio frame
    labels: list[int]  # aligned with input_ids, not shifted
    segments: list[AudioSegment]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def audio_frames(self) -> int:
        return sum(int(s.codes.shape[1]) for s in self.segments)
