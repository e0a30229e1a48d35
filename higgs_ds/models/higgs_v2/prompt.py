"""The Higgs Audio v2 prompt: ChatML -> expanded token ids + text labels + audio segments, and its
generation prompt.

Layout (Llama-3 headers, as Higgs Audio v2)::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{transcript}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|><|AUDIO_OUT|>…<|audio_eos|><|eot_id|>

Every audio placeholder is expanded to one position per delayed frame (T+K+1). A generation prompt is the
same conversation rendered with an empty target audio and cut right after the target's
``<|audio_out_bos|>``; one ``<|AUDIO_OUT|>`` position holding the all-BOS column is appended, since that
column is forced anyway. It is therefore token-for-token the prefix the model saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import torch

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import IGNORE_INDEX, delay_segment_input, segment_positions
from higgs_ds.data.render import AudioSegment, RenderedSample, encode_text, lookup_tokens
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
        return cls(**lookup_tokens(tokenizer, _SPECIAL_TOKEN_STRINGS, "Higgs Audio"))


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

    @property
    def pad_id(self) -> int:
        return self.special.pad

    def render(self, utt: Utterance, prompt: PromptConfig) -> RenderedSample:
        """One stored utterance as a training sample."""
        return self(utterance_to_chatml(utt, prompt))

    def collator(self, cfg: CollatorConfig) -> Collator:
        return Collator(self.pad_id, cfg)

    def generation_prompt(self, utt: Utterance, stream_bos: int, stream_eos: int,
                          prompt: PromptConfig) -> tuple[list[int], torch.Tensor]:
        """(ids ending with `<|audio_out_bos|><|AUDIO_OUT|>`, the prompt's delayed audio + the all-BOS column)."""
        rendered = self(utterance_to_chatml(utt, prompt))
        cut = len(rendered.input_ids) - 1 - rendered.input_ids[::-1].index(self.special.audio_out_bos)
        # the target is the last segment; its first column (all BOS) is forced, so the prompt ends with it
        audio = [delay_segment_input(s.codes, stream_bos, stream_eos).T for s in rendered.segments[:-1]]
        audio.append(torch.full((1, self.num_codebooks), stream_bos, dtype=torch.long))
        return rendered.input_ids[: cut + 1] + [self.special.audio_out], torch.cat(audio)

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
