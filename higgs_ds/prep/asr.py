"""Batched transcription with a confidence per utterance, for turning raw recordings into a manifest."""

from __future__ import annotations

import numpy as np
import torch

from higgs_ds.quality.models import MODEL_RATE, WhisperTranscriber


class BatchedWhisper(WhisperTranscriber):
    """A local Whisper folder decoding in a forced language, `batch_size` clips at a time.

    Confidence is the geometric mean of the chosen tokens' probabilities, the usual per-utterance
    figure for filtering ASR output (a transcript the model was unsure of scores low)."""

    def __init__(self, path: str, device: str = "cpu", language: str = "ar", batch_size: int = 8,
                 max_new_tokens: int = 200) -> None:
        super().__init__(path, device, language, max_new_tokens)
        self.batch_size = batch_size
        # the decoder's positions bound prompt (language/task tokens) plus transcript
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 8)

    @torch.no_grad()
    def transcribe(self, clips: list[np.ndarray]) -> list[tuple[str, float]]:
        """`clips`: mono float waveforms at `MODEL_RATE`, each at most 30 s."""
        results: list[tuple[str, float]] = []
        for first in range(0, len(clips), self.batch_size):
            batch = clips[first:first + self.batch_size]
            features = self.processor(batch, sampling_rate=MODEL_RATE, return_tensors="pt").input_features
            out = self.model.generate(features.to(self.device), language=self.language, task="transcribe",
                                      max_new_tokens=self.max_new_tokens, return_dict_in_generate=True,
                                      output_scores=True)
            log_probs = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            generated = out.sequences[:, -log_probs.shape[1]:]
            special = set(self.processor.tokenizer.all_special_ids)
            texts = self.processor.batch_decode(out.sequences, skip_special_tokens=True)
            for text, row_ids, row_log_probs in zip(texts, generated, log_probs, strict=True):
                keep = torch.tensor([int(i) not in special for i in row_ids]) & torch.isfinite(row_log_probs)
                confidence = float(row_log_probs[keep].mean().exp()) if keep.any() else 0.0
                results.append((text.strip(), confidence))
        return results
