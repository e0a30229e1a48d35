"""The audio spec: what the audio codes in a shard, a checkpoint or an export mean.

It is written once, by the shard builder from the codec that encoded the audio (``shards.json``), and
travels from there into every training checkpoint and every export (``audio_spec.json``). Whoever meets
codes reads it: the loader and collator (codebook count, stream ids, delay pattern), the start-up check
against the model, generation and the listening eval (which codec decodes the codes).

Two specs *match* when their codes mean the same thing: same codec kind, rates, codebooks, stream ids,
delay pattern and, when both know it, the same codec weights. Codes from another codec are foreign to a
model trained on this one, even with the same shapes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from higgs_ds.errors import UserError

SPEC_FILE = "audio_spec.json"
# Fields that do not change what a code means (where the codec was found, a human note).
_INFORMATIONAL = ("codec_path",)


class AudioSpecMismatchError(UserError, ValueError):
    """Codes of one spec were about to meet a model or codec of another."""


@dataclass(frozen=True)
class AudioSpec:
    codec: str  # codec family: "dac" (descript-audio-codec) or "higgs" (the Higgs Audio v2 tokenizer)
    sample_rate: int  # Hz of the waveforms the codec encodes and decodes
    frame_rate: float  # code frames per second (one LLM position per frame)
    num_codebooks: int
    codebook_size: int  # codes per codebook; stream BOS/EOS take the ids after them
    stream_bos: int = -1  # -1: codebook_size (the Higgs convention)
    stream_eos: int = -1  # -1: codebook_size + 1
    delay_pattern: bool = True  # codebook k shifted right by k inside each segment
    codec_sha256: str | None = None  # fingerprint of the codec weights; None when unknown (a released model)
    codec_path: str | None = None  # where the codec was loaded from when the codes were made (a hint only)

    def __post_init__(self) -> None:
        if self.stream_bos == -1:
            object.__setattr__(self, "stream_bos", self.codebook_size)
        if self.stream_eos == -1:
            object.__setattr__(self, "stream_eos", self.codebook_size + 1)
        problems = []
        if not self.codec or not isinstance(self.codec, str):
            problems.append(f"codec={self.codec!r} must name the codec family")
        if self.sample_rate <= 0 or self.frame_rate <= 0:
            problems.append(f"sample_rate={self.sample_rate} and frame_rate={self.frame_rate} must be positive")
        if self.num_codebooks < 1 or self.codebook_size < 1:
            problems.append(f"num_codebooks={self.num_codebooks} and codebook_size={self.codebook_size} must be >= 1")
        specials = {self.stream_bos, self.stream_eos}
        if len(specials) != 2 or min(specials) < self.codebook_size or max(specials) > self.codebook_size + 1:
            problems.append(f"stream BOS/EOS {self.stream_bos}/{self.stream_eos} must be the two ids after the "
                            f"{self.codebook_size} codes")
        if problems:
            raise ValueError("invalid audio spec: " + "; ".join(problems))

    @property
    def codebook_rows(self) -> int:
        """Rows per codebook in the model's tables: the codes plus stream BOS and EOS."""
        return self.codebook_size + 2

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate / self.frame_rate

    def describe(self) -> str:
        sha = f", weights sha256 {self.codec_sha256[:12]}" if self.codec_sha256 else ", weights unknown"
        return (f"{self.codec} codec, {self.sample_rate} Hz, {self.frame_rate:g} frames/s, {self.num_codebooks}x"
                f"{self.codebook_size} codes, stream BOS/EOS {self.stream_bos}/{self.stream_eos}, "
                f"{'delay pattern' if self.delay_pattern else 'no delay pattern'}{sha}")

    def differences(self, other: AudioSpec) -> list[str]:
        """Fields on which the two specs give codes different meanings (weights only when both know them)."""
        out = []
        for f in dataclasses.fields(self):
            if f.name in _INFORMATIONAL:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "codec_sha256" and (mine is None or theirs is None):
                continue
            if mine != theirs:
                out.append(f"{f.name} {mine!r} vs {theirs!r}")
        return out

    def require_match(self, other: AudioSpec, mine: str, theirs: str, hint: str = "") -> None:
        """Raise :class:`AudioSpecMismatchError` naming both sides when the codes would be foreign."""
        diff = self.differences(other)
        if diff:
            raise AudioSpecMismatchError(
                f"audio spec mismatch ({'; '.join(diff)}):\n  {mine}: {self.describe()}\n  {theirs}: "
                f"{other.describe()}" + (f"\n{hint}" if hint else ""))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "audio spec") -> AudioSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown audio spec field(s) {unknown}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None


# The codes the released Higgs Audio v2 checkpoints were trained on: its own tokenizer at 24 kHz, hop 960.
HIGGS_AUDIO_TOKENIZER = AudioSpec(codec="higgs", sample_rate=24000, frame_rate=25.0, num_codebooks=8,
                               codebook_size=1024)


def model_differences(spec: AudioSpec, model_config) -> list[str]:
    """What a model (a `HiggsAudioConfig`) disagrees with in the spec: codebooks, stream ids, delay pattern."""
    books = (model_config.audio_num_codebooks, model_config.audio_codebook_size)
    stream_ids = (model_config.audio_stream_bos_id, model_config.audio_stream_eos_id)
    out = []
    if books != (spec.num_codebooks, spec.codebook_size):
        out.append(f"model has {books[0]}x{books[1]} codebooks, the codes {spec.num_codebooks}x{spec.codebook_size}")
    if stream_ids != (spec.stream_bos, spec.stream_eos):
        out.append(f"model stream BOS/EOS {stream_ids[0]}/{stream_ids[1]}, the codes "
                   f"{spec.stream_bos}/{spec.stream_eos}")
    if bool(model_config.use_delay_pattern) != spec.delay_pattern:
        out.append(f"model use_delay_pattern={model_config.use_delay_pattern}, "
                   f"the codes delay_pattern={spec.delay_pattern}")
    return out


def write_spec(directory: str | Path, spec: AudioSpec) -> Path:
    path = Path(directory) / SPEC_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_spec(directory: str | Path) -> AudioSpec | None:
    """The spec stored in a checkpoint or export directory, or None when it has none."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        return None
    return AudioSpec.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
