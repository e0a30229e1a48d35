"""JSONL manifest: one utterance per line.

Fields: ``id`` (unique), ``text``, exactly one of ``audio`` (a sound file) / ``codes`` (.npy int [K, T]),
optional ``speaker`` and ``scene``, and optionally a voice-cloning reference: ``ref_text`` together with
exactly one of ``ref_audio`` / ``ref_codes``. Relative paths are relative to the manifest's folder.

Structural problems are found here, before any encoding; content problems (unreadable audio, codes out
of range) when the sample is loaded. Both raise :class:`BadSampleError` naming the sample.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.data.text import EMPTY, normalize_arabic, unspeakable
from higgs_ds.errors import DataError, quote

_KNOWN_FIELDS = {"id", "text", "audio", "codes", "speaker", "scene", "ref_audio", "ref_codes", "ref_text"}
_PATH_FIELDS = ("audio", "codes", "ref_audio", "ref_codes")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


class BadSampleError(DataError):
    """A manifest line that cannot become a training sample."""

    def __init__(self, where: str, sample_id: str | None, kind: str, reason: str) -> None:
        self.where, self.sample_id, self.kind, self.reason = where, sample_id, kind, reason
        super().__init__(f"{where}, sample {sample_id!r}: {reason}")

    def __reduce__(self):  # survive the trip back from builder worker processes
        return BadSampleError, (self.where, self.sample_id, self.kind, self.reason)

    def as_reject(self) -> dict:
        return {"where": self.where, "id": self.sample_id, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    key: str  # tar-safe form of id (webdataset splits member names at the first '.')
    line: int
    source: str  # "manifest.jsonl:12", used in messages
    text: str
    audio: str | None = None
    codes: str | None = None
    speaker: str | None = None
    scene: str | None = None
    ref_text: str | None = None
    ref_audio: str | None = None
    ref_codes: str | None = None

    def error(self, kind: str, reason: str) -> BadSampleError:
        return BadSampleError(self.source, self.id, kind, reason)


def _resolve(base: Path, value) -> str | None:
    if value in (None, ""):
        return None
    path = Path(value)
    return str(path if path.is_absolute() else base / path)


def parse_line(raw: str, line: int, manifest: Path, need_target: bool = True) -> ManifestEntry:
    """Parse and structurally validate one manifest line. Without `need_target` (a manifest of prompts,
    `prepare_data preferences`) the target audio/codes may be absent; they are then never read."""
    where = f"{manifest.name}:{line}"
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadSampleError(where, None, "invalid_json", f"invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise BadSampleError(where, None, "invalid_json", "invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise BadSampleError(where, None, "invalid_json", "line is not a JSON object")
    sample_id = record.get("id")
    if not isinstance(sample_id, str) or not sample_id.strip() or not _encodable(sample_id):
        raise BadSampleError(where, None, "missing_id", "missing or empty 'id' (a non-empty UTF-8 string)")
    unknown = set(record) - _KNOWN_FIELDS
    if unknown:
        raise BadSampleError(where, sample_id, "unknown_field", f"unknown fields {sorted(unknown)}")
    for name in _KNOWN_FIELDS - {"id"}:
        value = record.get(name)
        if value is not None and not (isinstance(value, str) and _encodable(value)):
            raise BadSampleError(where, sample_id, "bad_type", f"'{name}' must be a UTF-8 string, got "
                                 f"{type(value).__name__} {str(value)[:40]!r}")
    base = manifest.parent
    entry = ManifestEntry(
        id=sample_id, key=_KEY_UNSAFE.sub("_", sample_id), line=line, source=where,
        text=record.get("text") or "", audio=_resolve(base, record.get("audio")),
        codes=_resolve(base, record.get("codes")), speaker=record.get("speaker"), scene=record.get("scene"),
        ref_text=record.get("ref_text"), ref_audio=_resolve(base, record.get("ref_audio")),
        ref_codes=_resolve(base, record.get("ref_codes")),
    )
    _check_text(entry, "text", entry.text)
    if entry.audio is not None and entry.codes is not None or \
            need_target and entry.audio is None and entry.codes is None:
        raise entry.error("no_audio", "needs exactly one of 'audio' or 'codes'")
    has_ref_source = entry.ref_audio is not None or entry.ref_codes is not None
    if entry.ref_audio is not None and entry.ref_codes is not None:
        raise entry.error("ref_mismatch", "give 'ref_audio' or 'ref_codes', not both")
    if has_ref_source and not normalize_arabic(entry.ref_text or ""):
        raise entry.error("ref_mismatch", "reference audio/codes given without 'ref_text'")
    if has_ref_source:
        _check_text(entry, "ref_text", entry.ref_text)
    if entry.ref_text and not has_ref_source:
        raise entry.error("ref_mismatch", "'ref_text' given without 'ref_audio' or 'ref_codes'")
    for field in _PATH_FIELDS:
        path = getattr(entry, field)
        if path is not None and not _is_file(path):
            raise entry.error("missing_file", f"'{field}' file not found: {path[:300]}")
    return entry


def _check_text(entry: ManifestEntry, field: str, text: str | None) -> None:
    """The text gate (`data/text.py`), as every entry point applies it."""
    why = unspeakable(text)
    if why == EMPTY:
        raise entry.error("empty_text", f"empty '{field}'")
    if why is not None:
        raise entry.error("no_words", f"'{field}' {why}: {quote(text)}")


def _encodable(text: str) -> bool:
    """False for strings JSON can hold but UTF-8 cannot (lone surrogates such as "\\ud800")."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # name too long, NUL byte
        return False


def estimate_frames(entry: ManifestEntry, frame_rate: float, max_seconds: float | None = None) -> int:
    """Frames of target + reference, from file headers only (used to plan shard sizes). Audio longer
    than `max_seconds` is a bad sample ("too_long"): it is never decoded."""
    total = 0
    for audio_field, codes_field in (("audio", "codes"), ("ref_audio", "ref_codes")):
        audio, codes = getattr(entry, audio_field), getattr(entry, codes_field)
        if codes is not None:
            try:
                shape = np.load(codes, mmap_mode="r").shape
            except Exception as exc:  # numpy raises several types for broken files
                raise entry.error("unreadable_codes", f"unreadable '{codes_field}' {codes}: {exc}") from None
            total += int(shape[-1]) if len(shape) == 2 else 0
        elif audio is not None:
            info = audio_header(entry, audio_field, max_seconds)
            total += int(info.frames / info.samplerate * frame_rate) + 1
    return total


def audio_header(entry: ManifestEntry, audio_field: str = "audio", max_seconds: float | None = None):
    """The soundfile header of the entry's `audio_field`. Audio that cannot be opened, holds no samples or
    lasts over `max_seconds` is a bad sample, found without decoding a single sample."""
    audio = getattr(entry, audio_field)
    try:
        info = soundfile.info(audio)
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, ...
        raise entry.error("unreadable_audio", f"unreadable '{audio_field}' {audio}: {exc}") from None
    if info.frames <= 0:
        raise entry.error("empty_audio", f"'{audio_field}' {audio} has no samples")
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise entry.error("too_long", f"'{audio_field}' {audio} lasts {seconds:.0f} s, over --max-seconds "
                          f"{max_seconds:g}: segment it into utterances first (or raise --max-seconds)")
    return info


def read_manifest(path: str | Path, skip_bad: bool, lines: tuple[int, int] | None = None,
                  need_target: bool = True) -> tuple[list[ManifestEntry], list[dict]]:
    """All valid entries in file order, and the rejects (only when ``skip_bad``; else the first bad
    line raises). Duplicate ids (or ids that collide once made tar-safe) are bad samples. ``lines``:
    only the 1-based line numbers [first, end) (one part of a split build). ``need_target``: see
    `parse_line`."""
    path = Path(path)
    entries, rejects, keys = [], [], {}
    with open(path, "rb") as f:
        for line_no, raw_bytes in enumerate(f, start=1):
            if not raw_bytes.strip() or (lines and not lines[0] <= line_no < lines[1]):
                continue
            try:
                try:
                    raw = raw_bytes.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadSampleError(f"{path.name}:{line_no}", None, "invalid_utf8",
                                         f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
                entry = parse_line(raw, line_no, path, need_target)
                if entry.key in keys:
                    raise entry.error("duplicate_id", f"duplicate id (clashes with line {keys[entry.key]})")
                keys[entry.key] = line_no
                entries.append(entry)
            except BadSampleError as exc:
                if not skip_bad:
                    raise
                rejects.append(exc.as_reject())
    return entries, rejects
