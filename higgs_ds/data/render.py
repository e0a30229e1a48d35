"""ChatML -> expanded token ids + text labels + audio segments.

Layout (Llama-3 headers, as Higgs Audio v2)::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{transcript}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|><|AUDIO_OUT|>…<|audio_eos|><|eot_id|>

Every audio placeholder is expanded here to one position per delayed frame (T+K+1), so the rendered
length is the model's sequence length; bucketing can use it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import torch

from higgs_ds.data.delay_pattern import IGNORE_INDEX, segment_positions
from higgs_ds.data.schema import AudioContent, ChatMLSample, PromptConfig, TextContent, Utterance, utterance_to_chatml

_SPECIAL_TOKEN_STRINGS = {
    "begin_of_text": "<|begin_of_text|>",
    "end_of_text": "<|end_of_text|>",
    "start_header": "<|start_header_id|>",
    "end_header": "<|end_header_id|>",
    "eot": "<|eot_id|>",
    "eom": "<|eom_id|>",
    "audio_bos": "<|audio_bos|>",
    "audio_eos": "<|audio_eos|>",
    "audio_out_bos": "<|audio_out_bos|>",
    "audio_in": "<|AUDIO|>",
    "audio_out": "<|AUDIO_OUT|>",
    "scene_desc_start": "<|scene_desc_start|>",
    "scene_desc_end": "<|scene_desc_end|>",
    "recipient": "<|recipient|>",
}
HIGGS_SPECIAL_TOKENS = tuple(_SPECIAL_TOKEN_STRINGS.values())


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the Higgs/Llama-3 special tokens, resolved from the tokenizer (never literals)."""

    begin_of_text: int
    end_of_text: int  # also the pad id
    start_header: int
    end_header: int
    eot: int
    eom: int
    audio_bos: int
    audio_eos: int
    audio_out_bos: int
    audio_in: int
    audio_out: int
    scene_desc_start: int
    scene_desc_end: int
    recipient: int

    @property
    def pad(self) -> int:
        return self.end_of_text

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTokens:
        ids, missing = {}, []
        for name in (f.name for f in fields(cls)):
            token = _SPECIAL_TOKEN_STRINGS[name]
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                missing.append(token)
            ids[name] = token_id
        if missing:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} lacks special tokens {missing}")
        return cls(**ids)


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
    """One audio content piece, in position order. ``is_output``: assistant audio (<|AUDIO_OUT|>,
    predicted by the audio head); else audio-in (<|AUDIO|>). ``trained``: its audio labels count."""

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


class ChatMLRenderer:
    """Tokenises ChatML samples. Each text piece is tokenised on its own with
    ``add_special_tokens=False`` and concatenated, matching upstream ``prepare_chatml_sample``."""

    def __init__(self, tokenizer, num_codebooks: int) -> None:
        self.tokenizer = tokenizer
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        self.num_codebooks = num_codebooks
        self._encode_cached = lru_cache(maxsize=4096)(self._encode)  # headers/system prompts repeat
        # Ids that structure the conversation: a transcript holding one of them as text (e.g. a literal
        # "<|AUDIO_OUT|>") would silently break the turn layout or the audio/placeholder alignment.
        allowed_in_text = {self.special.scene_desc_start, self.special.scene_desc_end, self.special.recipient}
        self._structural = {getattr(self.special, f.name) for f in fields(SpecialTokens)} - allowed_in_text

    def _encode(self, text: str) -> tuple[int, ...]:
        return encode_text(self.tokenizer, text, self._structural)

    def render(self, utt: Utterance, prompt: PromptConfig) -> RenderedSample:
        """One stored utterance as a training sample (the interface both prompt layouts share)."""
        return self(utterance_to_chatml(utt, prompt))

    def __call__(self, sample: ChatMLSample) -> RenderedSample:
        sp = self.special
        ids, labels, segments = [sp.begin_of_text], [IGNORE_INDEX], []
        messages = sample.messages
        for turn, message in enumerate(messages):
            header = (sp.start_header, *self._encode_cached(message.role), sp.end_header, *self._encode_cached("\n\n"))
            ids += header
            labels += [IGNORE_INDEX] * len(header)
            trained = message.role == "assistant" and (sample.start_index is None or turn >= sample.start_index)
            for piece in message.content:
                if isinstance(piece, TextContent):
                    tokens = self._encode_cached(piece.text)
                    ids += tokens
                    labels += tokens if trained else [IGNORE_INDEX] * len(tokens)
                elif isinstance(piece, AudioContent):
                    self._append_audio(piece, message.role == "assistant", trained, ids, labels, segments)
                else:
                    raise TypeError(f"unknown content type {type(piece).__name__} in turn {turn}")
            next_is_assistant = turn + 1 < len(messages) and messages[turn + 1].role == "assistant"
            end = sp.eom if message.role == "assistant" and next_is_assistant else sp.eot
            ids.append(end)
            labels.append(end if trained else IGNORE_INDEX)
        return RenderedSample(ids, labels, segments)

    def _append_audio(self, piece: AudioContent, is_output: bool, trained: bool, ids, labels, segments) -> None:
        sp = self.special
        codes = torch.as_tensor(piece.codes).long()
        if codes.shape[0] != self.num_codebooks:
            raise ValueError(f"audio has {codes.shape[0]} codebooks, renderer expects {self.num_codebooks}")
        n_positions = segment_positions(codes.shape[1], self.num_codebooks)
        bos = sp.audio_out_bos if is_output else sp.audio_bos
        placeholder = sp.audio_out if is_output else sp.audio_in
        ids += [bos] + [placeholder] * n_positions + [sp.audio_eos]
        # Audio-out bos/eos are text targets of a trained assistant turn; audio positions never are.
        boundary = trained and is_output
        labels += [bos if boundary else IGNORE_INDEX] + [IGNORE_INDEX] * n_positions
        labels.append(sp.audio_eos if boundary else IGNORE_INDEX)
        segments.append(AudioSegment(codes, is_output=is_output, trained=is_output and trained))
