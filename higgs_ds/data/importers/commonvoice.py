"""Common Voice layout: ``<split>.tsv`` (header with at least ``client_id``, ``path``, ``sentence``;
tab-separated, quotes are literal) and ``clips/<path>`` (mp3, read by libsndfile >= 1.1). The id is the
clip's file stem, the speaker its ``client_id``. ``validated.tsv`` by default: train/dev/test are subsets
of it, so importing several of them would duplicate rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from higgs_ds.data.importers.common import ImportConfig, SourceRow, not_utf8, text_lines
from higgs_ds.data.manifest import BadSampleError

REQUIRED_COLUMNS = ("client_id", "path", "sentence")


def read_commonvoice(cfg: ImportConfig) -> Iterator[SourceRow | BadSampleError]:
    src = Path(cfg.src)
    tsv = src / f"{cfg.split or 'validated'}.tsv"
    if not tsv.is_file():
        found = sorted(p.stem for p in src.glob("*.tsv"))
        raise FileNotFoundError(f"{tsv} not found; the folder has the splits {found} (choose one with --split)")
    lines = text_lines(tsv)
    header_where, header = next(lines, (None, None))
    columns = header.split("\t") if header else []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{header_where or tsv}: header lacks the columns {missing} (has {columns})")
    for where, line in lines:
        if line is None:
            yield not_utf8(where)
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            yield BadSampleError(where, None, "malformed_line",
                                 f"expected {len(columns)} tab-separated fields, got {len(fields)}")
            continue
        row = dict(zip(columns, fields, strict=True))
        clip = row["path"].strip()
        yield SourceRow(where, Path(clip).stem or None, row["sentence"], src / "clips" / clip if clip else None,
                        row["client_id"] or None)
