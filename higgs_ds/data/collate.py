"""Collate rendered samples into the batch the model consumes.

Batch contract (all LongTensor, right-padded):

``input_ids`` [B, S]
    Text token ids, already expanded: every delayed audio frame has its own position. Audio-in
    positions (a reference) and audio-out positions (the speech to learn) hold the family's placeholder ids
    (Higgs Audio v2: ``<|AUDIO|>`` / ``<|AUDIO_OUT|>``), padding holds the renderer's pad id.
``attention_mask`` [B, S]
    1 for real positions, 0 for padding.
``labels`` [B, S]
    Text labels aligned with positions, NOT shifted (the loss shifts). -100 on prompts, every audio
    position, padding and untrained turns; which text is trained is the family renderer's choice (Higgs
    Audio v2: assistant text, ``<|audio_out_bos|>``, ``<|audio_eos|>``, end-of-turn tokens).
``audio_ids`` [N_audio, K]
    Codes fed at every audio position (in and out), row-major (batch, then position), with the delay
    pattern applied per segment (T+K+1 rows each; stream BOS in the lower triangle, EOS in the upper; the
    ids come from the data's `AudioSpec`, 1024/1025 for 1024-code codebooks).
``audio_labels`` [N_out, K]
    For the audio-out positions only, row-major: ``[-100 | codes | EOS]`` delayed, so the first row of
    every segment is all -100. A segment that is not trained is all -100. (This is the layout of the
    base `Collator`; a family whose rows differ overrides `segment_rows`.)

A batch without audio still has ``audio_ids`` / ``audio_labels`` of shape [0, K].
``S`` is rounded up to ``pad_to_multiple_of`` (upstream trains with 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.delay_pattern import IGNORE_INDEX, delay_segment_input, delay_segment_labels
from higgs_ds.data.render import RenderedSample


@dataclass(frozen=True)
class CollatorConfig:
    num_codebooks: int
    stream_bos: int
    stream_eos: int
    pad_to_multiple_of: int = 8

    def __post_init__(self) -> None:
        if self.num_codebooks < 1 or self.pad_to_multiple_of < 1:
            raise ValueError(f"invalid collator config {self}")

    @classmethod
    def from_spec(cls, spec: AudioSpec, pad_to_multiple_of: int = 8) -> CollatorConfig:
        return cls(spec.num_codebooks, spec.stream_bos, spec.stream_eos, pad_to_multiple_of)

    @classmethod
    def from_model_config(cls, model_cfg, pad_to_multiple_of: int = 8) -> CollatorConfig:
        return cls(model_cfg.audio_num_codebooks, model_cfg.audio_stream_bos_id, model_cfg.audio_stream_eos_id,
                   pad_to_multiple_of)


def padded_length(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


class Collator:
    def __init__(self, pad_id: int, cfg: CollatorConfig) -> None:
        self.pad_id = pad_id
        self.cfg = cfg

    def __call__(self, samples: list[RenderedSample]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        k = self.cfg.num_codebooks
        seq_len = padded_length(max(len(s) for s in samples), self.cfg.pad_to_multiple_of)
        input_ids = torch.full((len(samples), seq_len), self.pad_id, dtype=torch.long)
        labels = torch.full((len(samples), seq_len), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), seq_len), dtype=torch.long)
        audio_ids, audio_labels = [torch.empty((0, k), dtype=torch.long)], [torch.empty((0, k), dtype=torch.long)]
        for row, sample in enumerate(samples):
            n = len(sample)
            input_ids[row, :n] = torch.tensor(sample.input_ids, dtype=torch.long)
            labels[row, :n] = torch.tensor(sample.labels, dtype=torch.long)
            attention_mask[row, :n] = 1
            for segment in sample.segments:  # already in position order
                if segment.codes.shape[0] != k:
                    raise ValueError(f"segment has {segment.codes.shape[0]} codebooks, collator expects {k}")
                rows, label_rows = self.segment_rows(segment)
                audio_ids.append(rows)
                if label_rows is not None:
                    audio_labels.append(label_rows)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "audio_ids": torch.cat(audio_ids).contiguous(),
            "audio_labels": torch.cat(audio_labels).contiguous(),
        }

    def segment_rows(self, segment) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(input rows [N, K], audio-label rows or None for audio-in) of one segment:
        `[BOS | codes | EOS]` delayed; a family whose rows differ overrides this."""
        rows = delay_segment_input(segment.codes, self.cfg.stream_bos, self.cfg.stream_eos).T
        if not segment.is_output:
            return rows, None
        return rows, delay_segment_labels(segment.codes, self.cfg.stream_eos, segment.trained).T
