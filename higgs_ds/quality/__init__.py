"""How good a recording is: the offline speech metrics and the scorer that combines them, shared by the
training-time listening eval, `launch/generate.py --score`, `launch/evaluate.py` and the prep filters.

- `scorer`: `SpeechScorer` (WER/CER, speaker similarity, MCD, DNSMOS per utterance), corpus aggregates,
  95% intervals, the JSON and table outputs, and `build_scorer` from a `ScorerConfig`;
- `signal`: resampling, and mel-cepstral distortion with DTW against a reference recording (no model);
- `models`: speaker similarity (resemblyzer's bundled encoder, or a local `WavLMForXVector` folder),
  DNSMOS (speechmos' bundled ONNX models) and ASR (a local `WhisperForConditionalGeneration` folder).

Everything runs offline: nothing is downloaded. Heavy imports happen when a model is built.
"""
