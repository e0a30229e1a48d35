"""Kaldi data folder: ``wav.scp`` (``utt_id path``), ``text`` (``utt_id transcript``), optional
``utt2spk``. Each ``wav.scp`` line is a row; a ``text`` line without a ``wav.scp`` line is a rejected row
too. Piped commands (``... |``) and archive offsets (``foo.ark:123``) are rejected with how to fix them;
a ``segments`` file (utterances cut from recordings) is refused for the whole folder."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from higgs_ds.data.importers.common import ImportConfig, SourceRow, not_utf8, text_lines
from higgs_ds.data.manifest import BadSampleError

_ARCHIVE = re.compile(r"\.ark:\d+$")


def _split_id(line: str) -> tuple[str, str]:
    """'utt_id rest of line' (any whitespace after the id) -> (utt_id, rest)."""
    fields = line.split(maxsplit=1)
    return fields[0], fields[1].strip() if len(fields) == 2 else ""


def _read_table(path: Path, rejects: list[BadSampleError]) -> dict[str, tuple[str, str]]:
    """``utt_id rest`` lines -> {utt_id: (rest, where)}; repeated ids become duplicate_id rejects."""
    table = {}
    for where, line in text_lines(path):
        if line is None:
            rejects.append(not_utf8(where))
            continue
        utt, rest = _split_id(line)
        if utt in table:
            rejects.append(BadSampleError(where, utt, "duplicate_id", f"duplicate id (first at {table[utt][1]})"))
            continue
        table[utt] = (rest, where)
    return table


def _read_utt2spk(path: Path) -> dict[str, str]:
    speakers = {}
    for where, line in text_lines(path):
        fields = (line or "").split()
        if len(fields) != 2 or speakers.get(fields[0], fields[1]) != fields[1]:
            raise ValueError(f"{where}: expected one 'utt_id speaker_id' line per utterance, got {line!r}")
        speakers[fields[0]] = fields[1]
    return speakers


def _audio_row(where: str, utt: str, spec: str, root: Path) -> Path | BadSampleError:
    if spec.endswith("|"):
        return BadSampleError(where, utt, "piped_command", f"wav.scp entry is a shell pipe ({spec!r}); run it "
                              "once to write a wav file (e.g. with sox or ffmpeg) and point wav.scp at that file")
    if _ARCHIVE.search(spec):
        return BadSampleError(where, utt, "archive_entry", f"wav.scp entry points into a Kaldi archive ({spec!r}); "
                              "extract it to wav files first (e.g. wav-copy ark:... ark,t:... or wav-to-file)")
    if not spec:
        return BadSampleError(where, utt, "malformed_line", "expected 'utt_id path'")
    path = Path(spec)
    return path if path.is_absolute() else root / path


def read_kaldi(cfg: ImportConfig) -> Iterator[SourceRow | BadSampleError]:
    src = Path(cfg.src)
    if (src / "segments").is_file():
        raise ValueError(f"{src / 'segments'}: utterances cut from longer recordings are not supported; "
                         "cut them into wav files first (e.g. with extract-segments)")
    for name in ("wav.scp", "text"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} not found (Kaldi layout: wav.scp + text [+ utt2spk])")
    rejects: list[BadSampleError] = []
    texts = _read_table(src / "text", rejects)
    speakers = _read_utt2spk(src / "utt2spk") if (src / "utt2spk").is_file() else None
    root = Path(cfg.audio_root or src)
    used_texts = set()
    for where, line in text_lines(src / "wav.scp"):
        if line is None:
            yield not_utf8(where)
            continue
        utt, spec = _split_id(line)
        used_texts.add(utt)  # its text line belongs to this row, whatever becomes of it
        audio = _audio_row(where, utt, spec, root)
        if isinstance(audio, BadSampleError):
            yield audio
        elif utt not in texts:
            yield BadSampleError(where, utt, "missing_text", "no line for this id in text")
        elif speakers is not None and utt not in speakers:
            yield BadSampleError(where, utt, "missing_speaker", "no line for this id in utt2spk")
        else:
            yield SourceRow(where, utt, texts[utt][0], audio, speakers[utt] if speakers else None)
    yield from rejects
    for utt, (_, where) in texts.items():
        if utt not in used_texts:
            yield BadSampleError(where, utt, "missing_audio", "no line for this id in wav.scp")
