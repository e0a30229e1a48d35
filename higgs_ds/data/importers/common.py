"""The import pipeline shared by every corpus format: source rows -> checked manifest lines.

A format reader yields one item per input row: a :class:`SourceRow`, or a :class:`BadSampleError` for a
row it could not even read (a malformed line, a piped ``wav.scp`` command). Every row then ends up either
in ``train.jsonl`` / ``eval.jsonl`` or in ``rejects.jsonl`` (the builder's record shape: where, id, kind,
reason), and ``read == written + rejected`` is checked before the summary is returned.

Checks, in order: the audio exists and decodes to at least one sample (in-memory audio is written to
``<out>/audio/NNNNNNN.wav`` first), the line passes :func:`higgs_ds.data.manifest.parse_line` (ids, paths,
and the text gate of ``data/text.py``: a letter or digit), and the id is new (after it is made tar-safe).
Text is written as it came; the renderer normalises it later.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from higgs_ds.data.manifest import BadSampleError, parse_line
from higgs_ds.errors import DataError, UserError, quote
from higgs_ds.output_guard import OutputKind

FORMAT_OPTIONS = {  # options that only make sense for one format (None = not given)
    "hf": ("split", "audio_column", "text_column", "speaker_column", "id_column"),
    "ljspeech": ("speaker",),
    "commonvoice": ("split",),
    "kaldi": ("audio_root",),
    "lhotse": ("split",),
}
SPLITS = ("train", "eval")
AUDIO_DIR = "audio"  # under the output folder, for audio that arrives as bytes or arrays
IMPORT_OUTPUT = OutputKind("prepare_data import", files=("import_summary.json",))


@dataclass(frozen=True)
class ImportConfig:
    fmt: str  # one of FORMAT_OPTIONS
    src: str
    out: str
    split_by: str = "utterance"  # "utterance" | "speaker": no speaker in both train and eval
    eval_fraction: float = 0.0
    seed: int = 0
    ref_pairing: str = "none"  # "none" | "same-speaker": another utterance of the speaker, same split
    split: str | None = None  # hf: dataset split; commonvoice: .tsv name (default validated); lhotse: *_<split>.*
    audio_column: str | None = None  # hf, default "audio"
    text_column: str | None = None  # hf, default "text"
    speaker_column: str | None = None  # hf
    id_column: str | None = None  # hf, default "<split>_<row index>"
    speaker: str | None = None  # ljspeech, default the folder name
    audio_root: str | None = None  # kaldi: relative wav.scp paths are relative to it (default: --src)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fmt not in FORMAT_OPTIONS:
            raise ValueError(f"unknown corpus format {self.fmt!r}; expected one of {sorted(FORMAT_OPTIONS)}")
        if not (Path(self.src).is_dir() or (self.fmt == "lhotse" and Path(self.src).is_file())):
            raise FileNotFoundError(f"corpus folder {self.src} not found")
        if self.split_by not in ("utterance", "speaker"):
            raise ValueError(f"split_by must be 'utterance' or 'speaker', got {self.split_by!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.ref_pairing not in ("none", "same-speaker"):
            raise ValueError(f"ref_pairing must be 'none' or 'same-speaker', got {self.ref_pairing!r}")
        foreign = [name for fmt, names in FORMAT_OPTIONS.items() if fmt != self.fmt for name in names
                   if name not in FORMAT_OPTIONS[self.fmt] and getattr(self, name) is not None]
        if foreign:
            raise ValueError(f"options {sorted(set(foreign))} do not apply to --from {self.fmt}")


@dataclass(frozen=True)
class AudioArray:
    samples: np.ndarray  # [samples] or [samples, channels]
    sample_rate: int


@dataclass(frozen=True)
class SourceRow:
    where: str  # "metadata.csv:12", "train[7]": names the input row in rejects
    id: str | None
    text: str | None
    audio: Path | bytes | AudioArray | None  # a file to reference, or audio to write under <out>/audio
    speaker: str | None = None


@dataclass
class Accepted:
    record: dict  # the manifest line, before reference pairing
    key: str
    seconds: float
    split: str = "train"


@dataclass
class ImportResult:
    accepted: list[Accepted] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    read: int = 0


# ---- row checks ---------------------------------------------------------------------------------


def _decode(source, label: str, row: SourceRow) -> tuple[np.ndarray, int, str]:
    """Decode the whole file (a truncated body fails here, not in the builder): samples, rate, subtype."""
    try:
        with soundfile.SoundFile(source) as f:
            data, rate, subtype = f.read(dtype="float32", always_2d=True), f.samplerate, f.subtype
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, TypeError for odd inputs
        reason = f"unreadable audio {label}: {exc}"
        if label.lower().endswith(".mp3") and "MP3" not in soundfile.available_formats():
            reason += f" (libsndfile {soundfile.__libsndfile_version__} cannot read MP3; it needs >= 1.1)"
        raise BadSampleError(row.where, row.id, "unreadable_audio", reason) from None
    if data.shape[0] == 0:
        raise BadSampleError(row.where, row.id, "empty_audio", f"audio {label} has no samples")
    return data, rate, subtype


def _audio_for_manifest(row: SourceRow, index: int, out: Path) -> tuple[str, float]:
    """The manifest's 'audio' value for a row (absolute source path, or a wav written under ``out``)
    and its duration in seconds."""
    if row.audio is None:
        raise BadSampleError(row.where, row.id, "no_audio", "row has no audio")
    if isinstance(row.audio, Path):
        if not row.audio.is_file():
            raise BadSampleError(row.where, row.id, "missing_file", f"audio file not found: {row.audio}")
        data, rate, _ = _decode(str(row.audio), str(row.audio), row)
        return os.path.abspath(row.audio), data.shape[0] / rate
    if isinstance(row.audio, AudioArray):
        data, rate, subtype = np.asarray(row.audio.samples, dtype=np.float32), row.audio.sample_rate, "FLOAT"
        if data.size == 0:
            raise BadSampleError(row.where, row.id, "empty_audio", "audio array has no samples")
    else:
        data, rate, subtype = _decode(io.BytesIO(row.audio), "bytes", row)
    relative = f"{AUDIO_DIR}/{index:07d}.wav"  # by row index: ids may be missing, duplicated or unsafe
    (out / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    if not soundfile.check_format("WAV", subtype):
        subtype = "PCM_16"  # decoded lossy audio (mp3, vorbis, opus)
    soundfile.write(out / relative, data, rate, subtype=subtype)
    return relative, data.shape[0] / rate


def _accept(row: SourceRow, index: int, keys: dict[str, str], out: Path) -> Accepted:
    audio, seconds = _audio_for_manifest(row, index, out)
    record = {"id": row.id, "text": row.text, "audio": audio}
    if row.speaker is not None:
        record["speaker"] = row.speaker
    try:
        entry = parse_line(json.dumps(record, ensure_ascii=False), index, out / "train.jsonl")  # the text gate too
        if entry.key in keys:
            raise entry.error("duplicate_id", f"duplicate id (clashes with {keys[entry.key]})")
    except BadSampleError as exc:
        if not Path(audio).is_absolute():
            (out / audio).unlink()
        raise BadSampleError(row.where, exc.sample_id or row.id, exc.kind, exc.reason) from None
    keys[entry.key] = row.where
    return Accepted(record, entry.key, seconds)


def check_rows(rows: Iterable[SourceRow | BadSampleError], out: Path, progress: bool = False) -> ImportResult:
    IMPORT_OUTPUT.create(out)
    result, keys = ImportResult(), {}
    for index, row in enumerate(tqdm(rows, unit="row", desc=f"import -> {out}", disable=not progress)):
        result.read += 1
        try:
            if isinstance(row, BadSampleError):
                raise row
            result.accepted.append(_accept(row, index, keys, out))
        except BadSampleError as exc:
            result.rejects.append(exc.as_reject())
    return result


def text_lines(path: Path) -> Iterator[tuple[str, str | None]]:
    """(where, line without its line break) for every non-blank line of a text file; the line is None
    when it is not valid UTF-8 (the caller rejects it as malformed)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path.name}:{line_no}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield where, None
                continue
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark
            if line.strip():
                yield where, line


def not_utf8(where: str) -> BadSampleError:
    return BadSampleError(where, None, "malformed_line", "line is not valid UTF-8")


@contextmanager
def reading(path: Path | Callable[[], Path], what: str) -> Iterator[None]:
    """What a library raises while reading a corpus file (gzip, JSON, parquet, ...) becomes one DataError
    naming the file: the library's own text rarely does. `path` may be a function that finds the file
    once something failed."""
    try:
        yield
    except UserError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:  # pyarrow's errors are ValueErrors
        culprit = path() if callable(path) else path
        detail = quote(" ".join(str(exc).split()), 160)
        raise DataError(f"cannot read {what} {culprit} ({type(exc).__name__}: {detail})", where="--src",
                        fix="check that the file is whole and in the format --from names (copy it again if it was "
                            "cut short)") from None


# ---- split and reference pairing ----------------------------------------------------------------


def _rank(seed: int, name: str) -> str:
    """A seeded order that does not depend on the input order."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _require_speakers(items: list[Accepted], why: str) -> None:
    missing = sum(1 for a in items if "speaker" not in a.record)
    if missing:
        raise ValueError(f"{why} needs speaker ids, but {missing} of {len(items)} rows have none "
                         "(hf: --speaker-column; kaldi: a utt2spk file)")


def assign_splits(items: list[Accepted], cfg: ImportConfig) -> None:
    """Deterministic train/eval split (a function of the ids, speakers and seed)."""
    if cfg.eval_fraction == 0 or len(items) < 2:
        return
    target = max(1, round(cfg.eval_fraction * len(items)))
    if cfg.split_by == "utterance":
        for a in sorted(items, key=lambda a: _rank(cfg.seed, a.key))[:target]:
            a.split = "eval"
        return
    _require_speakers(items, "--split-by speaker")
    by_speaker = defaultdict(list)
    for a in items:
        by_speaker[a.record["speaker"]].append(a)
    if len(by_speaker) < 2:
        raise ValueError(f"--split-by speaker needs at least 2 speakers, the corpus has {len(by_speaker)}")
    taken = 0
    for speaker in sorted(by_speaker, key=lambda s: _rank(cfg.seed, s))[:-1]:  # train keeps >= 1 speaker
        if taken >= target:
            break
        for a in by_speaker[speaker]:
            a.split = "eval"
        taken += len(by_speaker[speaker])


def pair_references(items: list[Accepted], seed: int) -> int:
    """Give each utterance another utterance of its speaker as voice-cloning reference, chosen by a
    per-utterance seeded draw (never itself). Returns how many got none (their speaker has one utterance)."""
    by_speaker = defaultdict(list)
    for a in items:
        by_speaker[a.record["speaker"]].append(a)
    unpaired = 0
    for group in by_speaker.values():
        if len(group) < 2:
            unpaired += len(group)
            continue
        group = sorted(group, key=lambda a: a.key)
        for i, a in enumerate(group):
            j = random.Random(f"{seed}:{a.key}").randrange(len(group) - 1)
            other = group[j + (j >= i)].record
            a.record["ref_audio"], a.record["ref_text"] = other["audio"], other["text"]
    return unpaired


# ---- output -------------------------------------------------------------------------------------


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    tmp.replace(path)


def _manifest_lines(path: Path, records: list[dict]) -> Iterator[str]:
    for line_no, record in enumerate(records, start=1):
        line = json.dumps(record, ensure_ascii=False)
        parse_line(line, line_no, path)  # every written line must pass the manifest parser
        yield line


def write_outputs(result: ImportResult, cfg: ImportConfig) -> dict:
    """Split, pair, write train/eval/rejects and return the counts."""
    out, items = Path(cfg.out), result.accepted
    assign_splits(items, cfg)
    if cfg.ref_pairing == "same-speaker":
        _require_speakers(items, "--ref-pairing same-speaker")
    written, speakers, hours, unpaired = {}, {}, {}, {}
    for split in SPLITS:
        chosen = [a for a in items if a.split == split]
        if cfg.ref_pairing == "same-speaker":
            unpaired[split] = pair_references(chosen, cfg.seed)
        _write_lines(out / f"{split}.jsonl", _manifest_lines(out / f"{split}.jsonl", [a.record for a in chosen]))
        written[split] = len(chosen)
        speakers[split] = len({a.record.get("speaker") for a in chosen} - {None})
        hours[split] = round(sum(a.seconds for a in chosen) / 3600, 4)
    _write_lines(out / "rejects.jsonl", (json.dumps(r, ensure_ascii=False) for r in result.rejects))
    summary = {"from": cfg.fmt, "src": cfg.src, "read": result.read, "written": written,
               "rejected": len(result.rejects),
               "reject_kinds": dict(sorted(Counter(r["kind"] for r in result.rejects).items())),
               "speakers": speakers, "hours": hours}
    if cfg.ref_pairing == "same-speaker":
        summary["without_reference"] = unpaired
    if summary["read"] != sum(written.values()) + summary["rejected"]:
        raise RuntimeError(f"import lost rows: {summary}")  # a bug in a reader or here, never bad input
    _write_lines(out / "import_summary.json", [json.dumps(summary, ensure_ascii=False, indent=1)])
    return summary
