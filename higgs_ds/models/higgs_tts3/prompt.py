"""The Higgs TTS 3 prompt, rendered to expanded ids, labels and audio segments, and its collator.

Layout (no chat template; every text piece tokenised with ``add_special_tokens=False``)::

    <|tts|> [<|ref_text|> ref_text] [<|ref_audio|> ref rows x (T_ref+K-1)] <|text|> text <|audio|> rows x (T+K-1)

Audio rows are the delay pattern of the codes *without* BOS/EOS columns: codebook k is shifted right by k,
BOC (1024) fills the upper-left triangle and EOC (1025) the lower-right one. Reference rows hold the audio-in
placeholder, target rows the audio-out placeholder; the model embeds both with its audio table.

Labels: there is no text loss, so every text label is -100. The audio head reads the `<|audio|>` position and
every target row; its label rows are one -100 row (for `<|audio|>`) and then the delayed codes with BOC
masked (forced at generation) and EOC kept (it tells the model where to stop). With the loss's shift, the
`<|audio|>` position predicts row 0 and row r predicts row r+1. The reference is never trained.

Control tags of the tokenizer (emotion, style, ...) inside the text pass through as text. The scene field of an
utterance has no slot in this layout and is not rendered; multi-turn interleaving has no public reference layout
and is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import IGNORE_INDEX, build_delay_pattern
from higgs_ds.data.render import AudioSegment, RenderedSample, encode_text
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.data.text import normalize_arabic
from higgs_ds.models.higgs_tts3.tokens import lookup_tts3_tokens


@dataclass(frozen=True)
class Tts3Tokens:
    """Ids of the layout's special tokens (from the tokenizer) and the two audio placeholders (the ids right
    after the tokenizer's last token, which it never emits)."""

    tts: int
    audio: int
    text: int
    ref_audio: int
    ref_text: int
    pad: int
    audio_in: int
    audio_out: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Tts3Tokens:
        return cls(**lookup_tts3_tokens(tokenizer))


def delayed_rows(codes: torch.Tensor, boc: int, eoc: int) -> torch.Tensor:
    """codes [K, T] -> [T+K-1, K]: the TTS 3 delay pattern (no BOS/EOS columns)."""
    return build_delay_pattern(codes, bos=boc, pad=eoc).T


class Tts3Renderer:
    def __init__(self, tokenizer, num_codebooks: int) -> None:
        self.tokenizer = tokenizer
        self.special = Tts3Tokens.from_tokenizer(tokenizer)
        self.num_codebooks = num_codebooks
        self._structural = {self.special.tts, self.special.audio, self.special.text, self.special.ref_audio,
                            self.special.ref_text}
        self._encode_cached = lru_cache(maxsize=4096)(lambda text: encode_text(tokenizer, text, self._structural))

    @property
    def pad_id(self) -> int:
        return self.special.pad

    def collator(self, cfg: CollatorConfig) -> Collator:
        return Tts3Collator(self.pad_id, cfg)

    def generation_prompt(self, utt: Utterance, stream_bos: int, stream_eos: int,
                          prompt: PromptConfig) -> tuple[list[int], torch.Tensor]:
        """(ids ending with `<|audio|>`, the reference's delayed rows [T_ref+K-1, K] or [0, K]); there is no
        all-BOS column in the sequence."""
        rendered = self.prompt(utt, prompt)
        rows = [delayed_rows(s.codes, stream_bos, stream_eos) for s in rendered.segments]
        return rendered.input_ids, torch.cat(rows) if rows else torch.zeros((0, self.num_codebooks), dtype=torch.long)

    def _codes(self, codes, what: str) -> torch.Tensor:
        codes = torch.as_tensor(codes).long()
        if codes.ndim != 2 or codes.shape[0] != self.num_codebooks:
            raise ValueError(f"{what} codes have shape {tuple(codes.shape)}, the renderer expects "
                             f"[{self.num_codebooks}, T]")
        return codes

    def prompt(self, utt: Utterance, prompt: PromptConfig | None = None) -> RenderedSample:
        """Everything up to and including `<|audio|>` (the reference segment, if any, untrained)."""
        sp, prompt = self.special, prompt or PromptConfig()
        ids, segments = [sp.tts], []
        if utt.ref_codes is not None:
            ref = self._codes(utt.ref_codes, "reference")
            if utt.ref_text:
                ids += [sp.ref_text, *self._encode_cached(normalize_arabic(utt.ref_text, prompt.text))]
            ids += [sp.ref_audio] + [sp.audio_in] * (ref.shape[1] + self.num_codebooks - 1)
            segments.append(AudioSegment(ref, is_output=False, trained=False))
        ids += [sp.text, *self._encode_cached(normalize_arabic(utt.text, prompt.text)), sp.audio]
        return RenderedSample(ids, [IGNORE_INDEX] * len(ids), segments)

    def render(self, utt: Utterance, prompt: PromptConfig | None = None) -> RenderedSample:
        """The training sample: the prompt, then one position per delayed target row (T+K-1)."""
        codes = self._codes(utt.codes, "target")
        sample = self.prompt(utt, prompt)
        rows = codes.shape[1] + self.num_codebooks - 1
        sample.input_ids += [self.special.audio_out] * rows
        sample.labels += [IGNORE_INDEX] * rows
        sample.segments.append(AudioSegment(codes, is_output=True, trained=True))
        return sample


class Tts3Collator(Collator):
    """The batch contract of `higgs_ds.data.collate`, with TTS 3 rows: input rows are the delayed codes; an
    output segment's label rows are one -100 row (its `<|audio|>` position) and the delayed codes with BOC
    masked."""

    def segment_rows(self, segment: AudioSegment) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = delayed_rows(segment.codes, self.cfg.stream_bos, self.cfg.stream_eos)
        if not segment.is_output:
            return rows, None
        labels = delayed_rows(segment.codes, IGNORE_INDEX, self.cfg.stream_eos)
        if not segment.trained:
            labels = torch.full_like(labels, IGNORE_INDEX)
        return rows, torch.cat([torch.full_like(labels[:1], IGNORE_INDEX), labels])
