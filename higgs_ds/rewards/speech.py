"""The built-in speech rewards, registered in `BUILTINS`, and `make_samples`, which turns generated codes
into the `RewardSample`s every reward reads.

Each built-in lies in [0, 1], higher is better (docs/rewards.md has their models, ranges and costs):

- `cer`: 1 - CER (floored at 0) of a local Whisper transcript against the prompt text, both sides through
  the Arabic evaluation normaliser (`quality.scorer.error_counts`);
- `sim`: cosine (floored at 0) of speaker embeddings, generated vs the prompt's reference voice, with the
  scorer's encoder (resemblyzer's GE2E; a local WavLM x-vector folder when `context["wavlm"]` names one).
  None (left out of the sample's weighted sum) when the prompt has no reference voice;
- `dnsmos`: DNSMOS P.835 overall quality (1..5) mapped linearly to [0, 1]: (ovrl - 1) / 4;
- `duration`: min(r, 1/r) with r = generated seconds / expected seconds, the expected length being the
  text's characters over a characters-per-second rate fitted on training shards (`fit_chars_per_second`);
- `stop`: 1 when the decoder's stopping rule fired before the frame limit, else 0.

An empty generation (no frame) scores 0 on every reward that reads audio.

The `context` dict every factory gets (keys a reward does not use are ignored):

| key | used by | meaning |
|---|---|---|
| `device` | cer, sim | device of the reward models (default "cpu") |
| `whisper` | cer | local `WhisperForConditionalGeneration` folder (required) |
| `language` | cer | Whisper decoding language (default "ar") |
| `whisper_max_new_tokens` | cer | transcript length limit (default 200) |
| `wavlm` | sim | local `WavLMForXVector` folder; without it, resemblyzer's encoder |
| `chars_per_second` | duration | the fitted speaking rate (required; `fit_chars_per_second`) |
| `frame_rate` | duration | code frames per second, when a sample's `meta` does not say it |
| `dnsmos_threads` | dnsmos | ONNX threads (default 1) |
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.shards import index_spec, list_shards, load_index
from higgs_ds.data.text import normalize_for_eval
from higgs_ds.errors import ConfigError
from higgs_ds.quality.models import MODEL_RATE
from higgs_ds.quality.scorer import cosine_similarity, error_counts
from higgs_ds.rewards.base import BUILTINS, Reward, RewardSample

REWARD_RATES_FILE = "reward_rates.json"  # {"chars_per_second": ..., "fitted_on": [...]} in a run folder


def text_chars(text: str) -> int:
    """The characters a text's duration is reckoned in: those CER counts (normalised, no spaces)."""
    return len(normalize_for_eval(text).replace(" ", ""))


def _seconds(sample: RewardSample, context: dict) -> float:
    rate = sample.meta.get("frame_rate", context.get("frame_rate"))
    if not rate:
        raise ConfigError("the duration reward needs the codes' frame rate", where="rewards.duration",
                          fix="build samples with make_samples (it records the spec's frame_rate) or put "
                              "frame_rate in the reward context")
    return int(sample.codes.shape[0]) / float(rate)


# ---- the built-ins -----------------------------------------------------------------------------------------


def _cer(context: dict) -> Reward:
    from higgs_ds.quality.models import WhisperTranscriber

    folder = context.get("whisper")
    if not folder:
        raise ConfigError("the cer reward needs a local Whisper folder", where="rewards.cer",
                          fix="give one (--whisper DIR, or the reward context's whisper key)")
    transcribe = WhisperTranscriber(folder, context.get("device", "cpu"), context.get("language", "ar"),
                                    int(context.get("whisper_max_new_tokens", 200)))

    def score(samples: list[RewardSample]) -> list[float]:
        out = []
        for s in samples:
            if s.audio is None or len(s.audio) == 0:
                out.append(0.0)
                continue
            counts = error_counts(s.text, transcribe(s.audio_at(MODEL_RATE), MODEL_RATE))
            out.append(max(0.0, 1.0 - counts["char_errors"] / max(counts["chars"], 1)))
        return out

    return Reward("cer", score, needs_audio=True)


def _sim(context: dict) -> Reward:
    from higgs_ds.quality.models import ResemblyzerEmbedder, WavLMEmbedder

    device = context.get("device", "cpu")
    embed = WavLMEmbedder(context["wavlm"], device) if context.get("wavlm") else ResemblyzerEmbedder(device)
    references: dict[str, np.ndarray] = {}  # the G samples of a prompt share its reference: embed it once

    def reference_embedding(s: RewardSample) -> np.ndarray:
        ref = s.reference_at(MODEL_RATE)
        key = hashlib.sha1(np.ascontiguousarray(ref).tobytes()).hexdigest()
        if key not in references:
            if len(references) > 256:
                references.clear()
            references[key] = embed(ref, MODEL_RATE)
        return references[key]

    def score(samples: list[RewardSample]) -> list[float | None]:
        out = []
        for s in samples:
            if s.reference_audio is None or len(s.reference_audio) == 0:
                out.append(None)  # zero-shot prompt: left out of this sample's weighted sum
            elif s.audio is None or len(s.audio) == 0:
                out.append(0.0)
            else:
                out.append(max(0.0, cosine_similarity(embed(s.audio_at(MODEL_RATE), MODEL_RATE),
                                                      reference_embedding(s))))
        return out

    return Reward("sim", score, needs_audio=True)


def dnsmos_to_unit(ovrl: float) -> float:
    """DNSMOS overall (1..5) -> [0, 1], linearly."""
    return min(1.0, max(0.0, (ovrl - 1.0) / 4.0))


def _dnsmos(context: dict) -> Reward:
    from higgs_ds.quality.models import DnsMos

    model = DnsMos(threads=int(context.get("dnsmos_threads", 1)))

    def score(samples: list[RewardSample]) -> list[float]:
        return [0.0 if s.audio is None or len(s.audio) == 0
                else dnsmos_to_unit(model(s.audio_at(MODEL_RATE), MODEL_RATE)["dnsmos_ovrl"]) for s in samples]

    score.model = model  # the loaded model, for callers that report raw DNSMOS too
    return Reward("dnsmos", score, needs_audio=True)


def duration_score(seconds: float, expected: float) -> float:
    """min(r, 1/r), r = seconds / expected: 1 at the expected length, 0.5 at half or twice it, 0 when empty."""
    if seconds <= 0 or expected <= 0:
        return 0.0
    ratio = seconds / expected
    return min(ratio, 1.0 / ratio)


def _duration(context: dict) -> Reward:
    rate = context.get("chars_per_second")
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"the duration reward needs a positive chars_per_second, got {rate!r}",
                          where="rewards.duration",
                          fix="fit it on training shards (higgs_ds.rewards.fit_chars_per_second) or give "
                              "--chars-per-second")

    def score(samples: list[RewardSample]) -> list[float]:
        return [duration_score(_seconds(s, context), text_chars(s.text) / rate) for s in samples]

    return Reward("duration", score, needs_audio=False)


def _stop(context: dict) -> Reward:
    return Reward("stop", lambda samples: [1.0 if s.finished else 0.0 for s in samples], needs_audio=False)


BUILTINS.update(cer=_cer, sim=_sim, dnsmos=_dnsmos, duration=_duration, stop=_stop)


# ---- the speaking rate -------------------------------------------------------------------------------------


def fit_chars_per_second(shard_dirs: Sequence[str | Path], max_samples: int | None = 50_000) -> float:
    """Characters (`text_chars`) per second of target audio over the training shards: total characters over
    total seconds, from the samples' JSON members only (no codes are read). At most `max_samples` samples."""
    chars, frames, seconds, seen = 0, 0, 0.0, 0
    for split in shard_dirs:
        index = load_index(split)
        spec = index_spec(index, str(Path(split)))
        for shard in list_shards(split, index):
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.name.endswith(".json"):
                        continue
                    meta = json.loads(tar.extractfile(member).read().decode("utf-8"))
                    chars += text_chars(meta["text"])
                    frames += int(meta["frames"])
                    seconds += int(meta["frames"]) / spec.frame_rate
                    seen += 1
                    if max_samples is not None and seen >= max_samples:
                        break
            if max_samples is not None and seen >= max_samples:
                break
    if seconds <= 0 or chars <= 0:
        raise ConfigError(f"no speech to fit a speaking rate on in {', '.join(map(str, shard_dirs))}",
                          where="rewards.duration", fix="give the training shards (data.shards)")
    return chars / seconds


def save_chars_per_second(folder: str | Path, rate: float, fitted_on: Sequence[str | Path]) -> Path:
    """Write `REWARD_RATES_FILE` into a run folder, so that scoring its generations later uses the same rate."""
    path = Path(folder) / REWARD_RATES_FILE
    path.write_text(json.dumps({"chars_per_second": rate, "fitted_on": [str(p) for p in fitted_on]}, indent=1) + "\n",
                    encoding="utf-8")
    return path


def read_chars_per_second(checkpoint: str | Path) -> float | None:
    """The rate a run saved: `REWARD_RATES_FILE` in `checkpoint` (a run, export or tag folder) or up to two
    folders above it (a tag folder lies in runs/NAME/checkpoints/); None when there is none."""
    folder = Path(checkpoint).resolve()
    for candidate in (folder, *list(folder.parents)[:2]):
        path = candidate / REWARD_RATES_FILE
        if path.is_file():
            try:
                return float(json.loads(path.read_text(encoding="utf-8"))["chars_per_second"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is not a rate file ({type(exc).__name__}: {exc})", where="rewards.duration",
                                  fix="remove it, or write it with save_chars_per_second") from None
    return None


# ---- codes -> samples --------------------------------------------------------------------------------------


def make_samples(codes: Sequence[torch.Tensor | np.ndarray], texts: Sequence[str], finished: Sequence[bool], *,
                 spec: AudioSpec, codec=None, needs_audio: bool = False,
                 reference_codes: Sequence[np.ndarray | torch.Tensor | None] | None = None,
                 reference_audio: Sequence[np.ndarray | None] | None = None,
                 reference_rate: int | None = None, meta: Sequence[dict] | None = None) -> list[RewardSample]:
    """Generated codes [K, T] (one per sample) -> RewardSamples with codes [T, K].

    Audio is decoded with `codec` only when `needs_audio` (`RewardSet.needs_audio`): the sample's `audio`
    and `reference_audio` are then at the codec's rate; each built-in resamples them once to its model's
    rate (`RewardSample.audio_at`). The reference voice is given as codes (decoded by the codec, once per
    distinct array: the G samples of a prompt share it) or as waveforms at `reference_rate`."""
    n = len(codes)
    if len(texts) != n or len(finished) != n:
        raise ValueError(f"make_samples: {n} codes, {len(texts)} texts, {len(finished)} finished flags")
    if needs_audio and codec is None:
        raise ValueError("make_samples: a reward needs audio, but no codec was given to decode it")
    rate = codec.sample_rate if codec is not None else spec.sample_rate
    refs: list[np.ndarray | None] = [None] * n
    if needs_audio and reference_audio is not None:
        from higgs_ds.quality.signal import resample

        refs = [None if r is None else resample(np.asarray(r, np.float32), reference_rate or rate, rate)
                for r in reference_audio]
    elif needs_audio and reference_codes is not None:
        decoded: dict[int, np.ndarray] = {}
        for i, r in enumerate(reference_codes):
            if r is not None:
                if id(r) not in decoded:
                    decoded[id(r)] = codec.decode(torch.as_tensor(np.asarray(r)).long()).float().numpy()
                refs[i] = decoded[id(r)]
    samples = []
    for i in range(n):
        c = torch.as_tensor(np.asarray(codes[i])).long()
        audio = codec.decode(c).float().numpy() if needs_audio and c.shape[1] else \
            (np.zeros(0, np.float32) if needs_audio else None)
        samples.append(RewardSample(codes=c.T.contiguous(), text=texts[i], sample_rate=rate, audio=audio,
                                    reference_audio=refs[i], finished=bool(finished[i]),
                                    meta={"frame_rate": spec.frame_rate, **(meta[i] if meta else {})}))
    return samples
