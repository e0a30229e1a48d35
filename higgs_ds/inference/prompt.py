"""TTS prompts, rendered exactly as in training, then opened for generation.

A request becomes the same ChatML conversation the training data uses (`utterance_to_chatml`: system
prompt with the optional scene block, optional voice-cloning reference turn, user text, assistant
audio). It is rendered by the training renderer with an empty target audio and cut right after the
target's ``<|audio_out_bos|>``; one ``<|AUDIO_OUT|>`` position holding the all-BOS column is
appended, since that column is forced anyway. The prompt is therefore token-for-token the prefix the
model saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from higgs_ds.data.delay_pattern import delay_segment_input
from higgs_ds.data.render import ChatMLRenderer
from higgs_ds.data.render_tts3 import Tts3Renderer
from higgs_ds.data.schema import PromptConfig, Utterance, utterance_to_chatml
from higgs_ds.data.text import normalize_arabic
from higgs_ds.errors import ConfigError


@dataclass
class TTSRequest:
    """What to say, optionally in the voice of a reference (its transcript + codec codes [K, T_ref])."""

    text: str
    scene: str | None = None
    ref_text: str | None = None
    ref_codes: np.ndarray | torch.Tensor | None = None
    id: str = "request"

    def __post_init__(self) -> None:
        if not normalize_arabic(self.text):  # tatweel or zero-width characters alone normalise to nothing
            raise ConfigError(f"TTSRequest {self.id!r}: empty text after normalisation ({self.text[:40]!r})",
                              fix="give words to speak")
        if self.ref_codes is not None:
            self.ref_codes = np.asarray(self.ref_codes)
            if self.ref_codes.ndim != 2 or self.ref_codes.shape[1] == 0:
                raise ValueError(f"TTSRequest {self.id!r}: ref_codes must be [K, T>0], got {self.ref_codes.shape}")
            if self.ref_text is None:
                raise ValueError(f"TTSRequest {self.id!r}: a reference audio needs its transcript (ref_text)")


@dataclass
class PromptIds:
    input_ids: list[int]  # expanded ids, ending with <|audio_out_bos|><|AUDIO_OUT|>
    audio_ids: torch.Tensor  # [N_audio, K]: prompt audio (delayed) + the all-BOS column


def build_prompt(renderer: ChatMLRenderer, request: TTSRequest, stream_bos: int, stream_eos: int,
                 prompt: PromptConfig | None = None) -> PromptIds:
    """`prompt` must be the PromptConfig the model was trained with (default: `PromptConfig()`); the stream
    ids are the model's (``audio_stream_bos_id`` / ``audio_stream_eos_id``)."""
    prompt = prompt or PromptConfig()
    if isinstance(renderer, Tts3Renderer):  # Higgs TTS 3: ends with <|audio|>, no all-BOS column
        from higgs_ds.inference.tts3 import tts3_prompt

        return PromptIds(*tts3_prompt(renderer, request.text, request.ref_text, request.ref_codes, stream_bos,
                                      stream_eos, prompt))
    k = renderer.num_codebooks
    empty = np.zeros((k, 0), dtype=np.int64)
    utt = Utterance(id=request.id, text=request.text, codes=empty, scene=request.scene,
                    ref_text=request.ref_text, ref_codes=request.ref_codes)
    rendered = renderer(utterance_to_chatml(utt, prompt))
    audio_out_bos = renderer.special.audio_out_bos
    cut = len(rendered.input_ids) - 1 - rendered.input_ids[::-1].index(audio_out_bos)
    # the target is the last segment; its first column (all BOS) is forced, so the prompt ends with it
    audio = [delay_segment_input(s.codes, stream_bos, stream_eos).T for s in rendered.segments[:-1]]
    audio.append(torch.full((1, k), stream_bos, dtype=torch.long))
    return PromptIds(rendered.input_ids[: cut + 1] + [renderer.special.audio_out], torch.cat(audio))


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
