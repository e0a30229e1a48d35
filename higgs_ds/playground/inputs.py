"""What a page sends, checked before it reaches the model: the text (the data path's gate and normalisation),
an uploaded or recorded reference clip (size, format, length, silence) and the sampling settings.

Every refusal is a `UserError` whose one line the page shows, as the command lines print it. An upload is
read only after it was copied, size-checked, into the playground's own temporary folder.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.data.text import ArabicTextConfig, normalize_arabic, unspeakable
from higgs_ds.errors import ConfigError, DataError, quote
from higgs_ds.inference import GenerationConfig

MAX_UPLOAD_BYTES = 20_000_000  # a reference clip: ~10 min of 16-bit 16 kHz audio, far more than is useful
MIN_REFERENCE_S = 0.5  # shorter than this carries no voice to copy
MAX_REFERENCE_S = 30.0  # the prompt grows with the reference: longer ones are cut by nothing, so refused
SILENCE_DBFS = -60.0  # a clip whose RMS level is below this holds no voice


def checked_text(text: str | None, cfg: ArabicTextConfig, what: str = "text") -> str:
    """`text` normalised as the model's prompt normalises it (its numbers read out when its recipe says so),
    or a ConfigError when the gate of every entry point refuses it."""
    why = unspeakable(text)
    if why:
        raise ConfigError(f"the {what} {quote(text or '')} {why}", where=what, fix="type words to speak")
    return normalize_arabic(text or "", cfg)


@dataclass
class ReferenceClip:
    """A reference voice read from a file: mono float32 samples, their rate, and what it says."""

    wav: np.ndarray
    sample_rate: int
    text: str


def _level_dbfs(wav: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _copy_capped(path: Path, scratch: Path, max_bytes: int, where: str) -> Path:
    """`path` copied into `scratch`, reading at most max_bytes + 1 bytes (a file that grew since it was sized
    is refused, not read to its end); the copy is removed on every error."""
    scratch.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=scratch, suffix=path.suffix[:10])
    local = Path(name)
    try:
        with open(fd, "wb") as copy, open(path, "rb") as src:
            left = max_bytes + 1
            while left > 0 and (chunk := src.read(min(left, 1 << 20))):
                copy.write(chunk)
                left -= len(chunk)
        if left <= 0:
            raise DataError("the reference file grew over the upload limit while it was read", where=where,
                            fix="upload it again")
    except FileNotFoundError:  # removed since it was sized
        local.unlink(missing_ok=True)
        raise DataError("the uploaded reference is gone", where=where, fix="upload or record it again") from None
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    return local


def read_reference(path: str | Path, transcript: str | None, cfg: ArabicTextConfig, scratch: Path,
                   max_bytes: int = MAX_UPLOAD_BYTES) -> ReferenceClip:
    """Copy the upload at `path` into `scratch` (at most `max_bytes` + 1 bytes read), check its header's length
    there, and only then decode it (a small compressed file may hold hours of audio: those are never decoded)."""
    where = "reference audio"
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError("the uploaded reference is gone", where=where, fix="upload or record it again") from None
    if size > max_bytes:
        raise DataError(f"the reference file is {_mb(size)}, over the {_mb(max_bytes)} limit",
                        where=where, fix=f"upload a clip of at most {MAX_REFERENCE_S:.0f} s")
    local = _copy_capped(path, scratch, max_bytes, where)
    try:
        try:
            info = soundfile.info(str(local))
        except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
            raise DataError(f"the uploaded file ({path.name}) is not a readable sound file ({type(exc).__name__})",
                            where=where, fix="upload a wav, flac or ogg recording") from None
        header_s = info.frames / info.samplerate if info.samplerate > 0 else 0.0
        if header_s > MAX_REFERENCE_S:  # refused from its header, before any sample is decoded
            raise DataError(f"the reference is {header_s:.1f} s long", where=where,
                            fix=f"give at most {MAX_REFERENCE_S:.0f} s (a sentence or two)")
        try:  # at most MAX_REFERENCE_S of frames, should the header under-report them
            data, rate = soundfile.read(str(local), dtype="float32", always_2d=True,
                                        frames=int(MAX_REFERENCE_S * info.samplerate) + 1)
        except Exception as exc:
            raise DataError(f"the uploaded file ({path.name}) is not a readable sound file ({type(exc).__name__})",
                            where=where, fix="upload a wav, flac or ogg recording") from None
    finally:
        local.unlink(missing_ok=True)
    wav = data.mean(axis=1)
    seconds = len(wav) / rate if rate else 0.0
    if seconds < MIN_REFERENCE_S:
        raise DataError(f"the reference is {seconds:.2f} s long", where=where,
                        fix=f"give at least {MIN_REFERENCE_S} s of the voice speaking")
    if seconds > MAX_REFERENCE_S:
        raise DataError(f"the reference is {seconds:.1f} s long", where=where,
                        fix=f"give at most {MAX_REFERENCE_S:.0f} s (a sentence or two)")
    if _level_dbfs(wav) < SILENCE_DBFS:
        raise DataError(f"the reference is silence (level {_level_dbfs(wav):.0f} dBFS)", where=where,
                        fix="record the voice speaking, closer to the microphone")
    text = checked_text(transcript, cfg, what="reference transcript")
    return ReferenceClip(wav.astype(np.float32), int(rate), text)


@dataclass(frozen=True)
class Sampling:
    """The page's sampling settings; `generation_config` checks them against the frame limit."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0
    max_frames: int = 750

    def generation_config(self, frame_limit: int) -> GenerationConfig:
        if not 1 <= self.max_frames <= frame_limit:
            raise ConfigError(f"maximum length {self.max_frames} frames is outside 1..{frame_limit}",
                              where="max length", fix=f"give at most {frame_limit} frames (the server's limit)")
        try:  # greedy: argmax and no repetition-aware re-draws, so the same input gives the same codes
            return GenerationConfig(max_new_frames=int(self.max_frames),
                                    temperature=0.0 if self.greedy else float(self.temperature),
                                    top_k=int(self.top_k), top_p=float(self.top_p),
                                    ras_window=0 if self.greedy else GenerationConfig.ras_window, seed=int(self.seed))
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc).replace("GenerationConfig.", ""), where="sampling",
                              fix="temperature >= 0, top-k >= 0, top-p in (0, 1]") from None
