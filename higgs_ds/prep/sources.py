"""Which recordings `prepare_data segment` cuts, and the name each one goes by.

Inputs are audio files, folders (searched recursively, never into a segment output, so cut wavs are never
segmented again) or lists of paths. A recording's name is its path relative to the input that names it:
the same on every node and in every part of a Slurm array, so segment ids and speaker labels built on it
are unique across the corpus.
"""

from __future__ import annotations

import os
from pathlib import Path

from higgs_ds.data.parts import part_lines
from higgs_ds.errors import DataError
from higgs_ds.output_guard import OutputKind, inside

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
SEGMENT_OUTPUT = OutputKind("prepare_data segment", files=("segments.jsonl",))


def find_sources(inputs: tuple[str, ...], out: str | Path | None = None) -> list[Path]:
    """The audio files the inputs name. Never a file of `out` or of an earlier segment output: their cut
    wavs would be segmented again."""
    sources: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            sources += _audio_under(item)
        elif item.suffix.lower() in AUDIO_SUFFIXES:
            sources.append(item)
        elif item.is_file():  # a list of paths, relative to the list's folder
            lines = [ln.strip() for ln in item.read_text(encoding="utf-8").splitlines()]
            sources += [(item.parent / ln) for ln in lines if ln and not ln.startswith("#")]
        else:
            raise DataError(f"{item} does not exist", where="--input", fix="give audio files, folders or a list")
    if out is not None:
        sources = [s for s in sources if not inside(s, out)]
    if not sources:
        raise DataError(f"no audio files under {', '.join(inputs)}", where="--input",
                        fix=f"audio files end in one of {sorted(AUDIO_SUFFIXES)}")
    return sources


def part_of(sources: list[Path], part: tuple[int, int] | None) -> list[Path]:
    """Part i of N of the input files: a contiguous range of the sorted list, as `build --part` splits lines."""
    if part is None:
        return sources
    first, end = part_lines(len(sources), part)
    return sources[first - 1:end - 1]


def relative_name(source: Path, inputs: tuple[str, ...]) -> str:
    """The source's path relative to the input that names it (a folder, or a list's folder), else its name:
    the same on every node and in every part, so speaker labels built on it are unique across the corpus."""
    for item in map(Path, inputs):
        base = item if item.is_dir() else item.parent if item.suffix.lower() not in AUDIO_SUFFIXES else None
        if base is not None and inside(source, base):
            return Path(os.path.relpath(Path(source).resolve(), base.resolve())).as_posix()
    return Path(source).name


def _audio_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not SEGMENT_OUTPUT.owns(Path(root, d))]  # pruned, never descended into
        found += [Path(root, f) for f in files if Path(f).suffix.lower() in AUDIO_SUFFIXES]
    return sorted(found)


def refuse_same_names(sources: list[Path], inputs: tuple[str, ...]) -> None:
    """Two recordings that would get one name (talk.wav in two --input folders) would write over each other's
    cut wavs and share segment ids: refused before anything is written, naming both."""
    seen: dict[str, Path] = {}
    for source in sources:
        key = Path(relative_name(source, inputs)).with_suffix("").as_posix()
        if key in seen:
            raise DataError(f"{seen[key]} and {source} would both be named {key!r} (their wavs and segment ids "
                            "would collide)", where="--input",
                            fix="give their common parent folder as one --input, or rename one of them")
        seen[key] = source
