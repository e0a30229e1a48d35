"""A Hugging Face dataset on local disk: a ``save_to_disk`` folder (``load_from_disk``) or a folder of
data files (parquet, arrow, ...; ``load_dataset(folder, streaming=True)``, which infers the splits from
the file names and copies nothing into a cache). No hub access.

Audio columns are cast to ``Audio(decode=False)``: recent ``datasets`` decode through torchcodec, which
our torch need not support, so the bytes (or a local path, or an ``{"array", "sampling_rate"}`` dict) are
decoded here with soundfile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from higgs_ds.data.importers.common import AudioArray, ImportConfig, SourceRow, reading
from higgs_ds.data.manifest import BadSampleError

_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk


def _load(src: Path, split: str | None):
    """The chosen split as a Dataset/IterableDataset, and its name."""
    import datasets  # slow import, only for this format

    with reading(lambda: _damaged_file(src), "the dataset"):
        if any((src / marker).is_file() for marker in _SAVED_MARKERS):
            loaded = datasets.load_from_disk(str(src))
        else:
            loaded = datasets.load_dataset(str(src), streaming=True)
    if not isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split is not None:
            raise ValueError(f"{src} holds a single dataset without named splits; drop --split")
        return loaded, "row"
    if split is None and len(loaded) == 1:
        split = next(iter(loaded))
    if split not in loaded:
        raise ValueError(f"{src} has the splits {sorted(loaded)}; choose one with --split")
    return loaded[split], split


def _audio_source(value, src: Path) -> Path | bytes | AudioArray | None:
    """What an audio cell holds: bytes to decode, a local file, or samples."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        path = Path(value)
        return path if path.is_absolute() else src / path
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("array") is not None and value.get("sampling_rate"):
            return AudioArray(np.asarray(value["array"]), int(value["sampling_rate"]))
        return _audio_source(value["path"], src) if value.get("path") else None
    if value is None:
        return None
    raise TypeError(f"an audio cell of type {type(value).__name__}")


def read_hf(cfg: ImportConfig) -> Iterator[SourceRow | BadSampleError]:
    import datasets

    src = Path(cfg.src)
    dataset, name = _load(src, cfg.split)
    audio_col, text_col = cfg.audio_column or "audio", cfg.text_column or "text"
    wanted = [c for c in (audio_col, text_col, cfg.speaker_column, cfg.id_column) if c is not None]
    columns = list(dataset.features or {}) or list(dataset.column_names or [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"{src} ({name}) has no columns {missing}; its columns are {columns}")
    if isinstance((dataset.features or {}).get(audio_col), datasets.Audio):
        dataset = dataset.cast_column(audio_col, datasets.Audio(decode=False))
    with reading(lambda: _damaged_file(src), "the dataset"):  # streaming: files are read while iterating
        for index, row in enumerate(dataset):
            yield _row(row, index, name, cfg, src, audio_col, text_col)


def _row(row: dict, index: int, name: str, cfg: ImportConfig, src: Path, audio_col: str,
         text_col: str) -> SourceRow | BadSampleError:
    where = f"{name}[{index}]"
    sample_id = row[cfg.id_column] if cfg.id_column else f"{name}_{index:07d}"
    sample_id = None if sample_id is None else str(sample_id)
    try:
        audio = _audio_source(row[audio_col], src)
    except TypeError as exc:
        return BadSampleError(where, sample_id, "unreadable_audio", f"column {audio_col!r} holds {exc}")
    text = row[text_col] if isinstance(row[text_col], str) else None
    speaker = row[cfg.speaker_column] if cfg.speaker_column else None
    return SourceRow(where, sample_id, text, audio, None if speaker is None else str(speaker))


def _damaged_file(src: Path) -> Path:
    """The data file a failed read most likely came from: the first parquet file whose footer cannot be read
    (pyarrow's error names none), else the folder."""
    import pyarrow.parquet as pq

    for path in sorted(src.rglob("*.parquet")):
        try:
            pq.read_metadata(path)
        except Exception:  # noqa: BLE001 - any failure marks the file
            return path
    return src
