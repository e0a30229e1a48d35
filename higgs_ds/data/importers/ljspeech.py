"""LJSpeech layout: ``metadata.csv`` (``id|text|normalized_text``, no header, quotes are literal) and
``wavs/<id>.wav``; one speaker. The normalised column is used when the line has one and it is not empty,
else the raw text (many Arabic corpora in this layout have only two columns)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from higgs_ds.data.importers.common import ImportConfig, SourceRow, not_utf8, text_lines
from higgs_ds.data.manifest import BadSampleError


def read_ljspeech(cfg: ImportConfig) -> Iterator[SourceRow | BadSampleError]:
    src = Path(cfg.src)
    metadata = src / "metadata.csv"
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} not found (LJSpeech layout: metadata.csv + wavs/)")
    speaker = cfg.speaker or src.resolve().name
    for where, line in text_lines(metadata):
        if line is None:
            yield not_utf8(where)
            continue
        fields = line.split("|")
        if len(fields) not in (2, 3):
            yield BadSampleError(where, fields[0] or None, "malformed_line",
                                 f"expected 'id|text' or 'id|text|normalized_text', got {len(fields)} fields")
            continue
        text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        yield SourceRow(where, fields[0], text, src / "wavs" / f"{fields[0]}.wav", speaker)
