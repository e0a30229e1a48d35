"""Sample schema: what a shard stores (:class:`Utterance`) and the ChatML conversation it becomes.

The ChatML types mirror Boson's ``boson_multimodal/data_types.py``, with audio
carried as codec codes ``[K, T]`` rather than a URL: shards store codes, never rendered token ids, so
the tokenizer and the prompt layout can change without rebuilding shards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from higgs_ds.data.text import ArabicTextConfig, normalize_arabic

Role = Literal["system", "user", "assistant"]
DEFAULT_SYSTEM_PROMPT = "Generate audio following instruction."


@dataclass
class TextContent:
    text: str
    type: str = "text"


@dataclass
class AudioContent:
    """Audio as codec codes [K, T] (integers in [0, codebook_size))."""

    codes: np.ndarray
    type: str = "audio"

    def __post_init__(self) -> None:
        if self.codes.ndim != 2:
            raise ValueError(f"audio codes must be [K, T], got shape {self.codes.shape}")


Content = TextContent | AudioContent


@dataclass
class Message:
    role: Role
    content: list[Content]

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown role {self.role!r}")


@dataclass
class ChatMLSample:
    """A conversation. ``start_index`` masks the labels of ``messages[:start_index]`` (None = every
    assistant turn is trained, as upstream)."""

    messages: list[Message]
    start_index: int | None = None
    speaker: str | None = None


@dataclass
class Utterance:
    """One stored training example: a transcript and its codes, optionally with a same-speaker
    reference (transcript + codes) for voice cloning and a scene description."""

    id: str
    text: str
    codes: np.ndarray  # [K, T]
    speaker: str | None = None
    scene: str | None = None
    ref_text: str | None = None
    ref_codes: np.ndarray | None = None  # [K, T_ref]
    meta: dict = field(default_factory=dict)
    rejected_codes: np.ndarray | None = None  # [K, T_rej]: a preference pair's rejected sample (`codes` = chosen)

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1]) + (0 if self.ref_codes is None else int(self.ref_codes.shape[1]))


@dataclass(frozen=True)
class PromptConfig:
    """How an :class:`Utterance` becomes a conversation (the Higgs Audio v2 TTS prompt layout)."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    use_scene: bool = True  # add the <|scene_desc_start|>…<|scene_desc_end|> block when a scene is given
    train_reference_audio: bool = False  # also train on the voice-cloning reference turn
    text: ArabicTextConfig = ArabicTextConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PromptConfig:
        return cls(**{**d, "text": ArabicTextConfig(**d.get("text", {}))})


def system_message(prompt: PromptConfig, scene: str | None) -> Message:
    text = prompt.system_prompt
    if prompt.use_scene and scene:
        # The scene markers are special tokens: the tokenizer maps them to their ids inside the string.
        text += f"\n\n<|scene_desc_start|>\n{scene.strip()}\n<|scene_desc_end|>"
    return Message("system", [TextContent(text)])


def utterance_to_chatml(utt: Utterance, prompt: PromptConfig = PromptConfig()) -> ChatMLSample:
    """TTS: system / user transcript / assistant audio. Voice cloning (reference present): system /
    user ref transcript / assistant ref audio / user target transcript / assistant target audio; the
    reference turn is masked via ``start_index`` unless ``prompt.train_reference_audio``."""
    messages = [system_message(prompt, utt.scene)]
    if utt.ref_codes is not None:
        messages += [
            Message("user", [TextContent(normalize_arabic(utt.ref_text or "", prompt.text))]),
            Message("assistant", [AudioContent(utt.ref_codes)]),
        ]
    messages += [
        Message("user", [TextContent(normalize_arabic(utt.text, prompt.text))]),
        Message("assistant", [AudioContent(utt.codes)]),
    ]
    start_index = None if prompt.train_reference_audio else len(messages) - 1
    return ChatMLSample(messages, start_index=start_index, speaker=utt.speaker)
