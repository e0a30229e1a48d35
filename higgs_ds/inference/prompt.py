"""TTS prompts, rendered exactly as in training, then opened for generation.

A request becomes an `Utterance` with empty target audio; the model family's renderer turns it into the
prefix the model saw in training, up to the position that predicts the first audio row
(`Renderer.generation_prompt`). Batches of prompts are left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from higgs_ds.data.renderer import Renderer
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.data.text import unspeakable
from higgs_ds.errors import ConfigError, quote


@dataclass
class TTSRequest:
    """What to say, optionally in the voice of a reference (its transcript + codec codes [K, T_ref])."""

    text: str
    scene: str | None = None
    ref_text: str | None = None
    ref_codes: np.ndarray | torch.Tensor | None = None
    id: str = "request"

    def __post_init__(self) -> None:
        given = {"text": self.text} | ({} if self.ref_text is None else {"ref_text": self.ref_text})
        for name, text in given.items():
            why = unspeakable(text)  # the text gate of every entry point (data/text.py)
            if why:
                raise ConfigError(f"TTSRequest {self.id!r}: {name} {quote(text)} {why}", fix="give words to speak")
        if self.ref_codes is not None:
            self.ref_codes = np.asarray(self.ref_codes)
            if self.ref_codes.ndim != 2 or self.ref_codes.shape[1] == 0:
                raise ValueError(f"TTSRequest {self.id!r}: ref_codes must be [K, T>0], got {self.ref_codes.shape}")
            if self.ref_text is None:
                raise ValueError(f"TTSRequest {self.id!r}: a reference audio needs its transcript (ref_text)")


@dataclass
class PromptIds:
    input_ids: list[int]  # expanded ids, ending with the position that predicts the first audio row
    audio_ids: torch.Tensor  # [N_audio, K]: the delayed rows of the prompt's audio positions


def build_prompt(renderer: Renderer, request: TTSRequest, stream_bos: int, stream_eos: int,
                 prompt: PromptConfig | None = None) -> PromptIds:
    """`prompt` must be the PromptConfig the model was trained with (default: `PromptConfig()`); the stream
    ids are the model's (``audio_stream_bos_id`` / ``audio_stream_eos_id``)."""
    empty = np.zeros((renderer.num_codebooks, 0), dtype=np.int64)
    utt = Utterance(id=request.id, text=request.text, codes=empty, scene=request.scene, ref_text=request.ref_text,
                    ref_codes=request.ref_codes)
    return PromptIds(*renderer.generation_prompt(utt, stream_bos, stream_eos, prompt or PromptConfig()))


def left_pad(prompts: list[PromptIds], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch prompts with left padding, so every row's next position is the same column."""
    width = max(len(p.input_ids) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p.input_ids):] = torch.tensor(p.input_ids, dtype=torch.long)
        attention_mask[row, width - len(p.input_ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "audio_ids": torch.cat([p.audio_ids for p in prompts])}
