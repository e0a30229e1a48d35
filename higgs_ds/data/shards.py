"""Shard format: plain POSIX tar files written with ``webdataset.TarWriter``.

Each sample is a group of members sharing a key (the sample id made tar-safe)::

    {key}.codes.npy      int16 [K, T]     target codes
    {key}.ref_codes.npy  int16 [K, T_ref] voice-cloning reference codes (optional)
    {key}.rejected_codes.npy int16 [K, T_rej] a preference pair's rejected sample (pair shards only;
                         ``codes`` is then the chosen one, so a pair shard also trains supervised)
    {key}.json           UTF-8 JSON: id, text, speaker, scene, ref_text, frames, ref_frames

Codes, not token ids, are stored, so the tokenizer and prompt layout can change without a rebuild.
A split folder holds ``shard-000000.tar``… plus ``shards.json``, the index written by the builder; its
``audio_spec`` says what the codes mean (:mod:`higgs_ds.audio_spec`) and ``pairs`` whether its samples are
preference pairs (written by ``prepare_data preferences``; splits indexed before it existed are peeked).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.schema import Utterance

INDEX_NAME = "shards.json"
SHARD_NAME = "shard-{:06d}.tar"


def validate_codes(codes: np.ndarray, num_codebooks: int, codebook_size: int, what: str) -> np.ndarray:
    """Check shape [K, T>0] and range [0, codebook_size); return int16. Raises ValueError naming ``what``."""
    if codes.ndim != 2:
        raise ValueError(f"{what}: codes must be [K, T], got shape {codes.shape}")
    if codes.shape[0] != num_codebooks:
        raise ValueError(f"{what}: {codes.shape[0]} codebooks, expected {num_codebooks}")
    if codes.shape[1] == 0:
        raise ValueError(f"{what}: codes have no frames")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{what}: codes must be integers, got {codes.dtype}")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(f"{what}: codes outside [0, {codebook_size - 1}] (min {low}, max {high})")
    return codes.astype(np.int16)


def utterance_to_tar_sample(key: str, utt: Utterance) -> dict:
    meta = {"id": utt.id, "text": utt.text, "speaker": utt.speaker, "scene": utt.scene, "ref_text": utt.ref_text,
            "frames": int(utt.codes.shape[1]),
            "ref_frames": 0 if utt.ref_codes is None else int(utt.ref_codes.shape[1]), **utt.meta}
    if utt.rejected_codes is not None:
        meta["rejected_frames"] = int(utt.rejected_codes.shape[1])
    sample = {"__key__": key, "codes.npy": utt.codes.astype(np.int16),
              # ensure_ascii=False keeps Arabic readable with `tar -xO`
              "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}
    if utt.ref_codes is not None:
        sample["ref_codes.npy"] = utt.ref_codes.astype(np.int16)
    if utt.rejected_codes is not None:
        sample["rejected_codes.npy"] = utt.rejected_codes.astype(np.int16)
    return sample


def tar_sample_to_utterance(sample: dict, spec: AudioSpec) -> Utterance:
    """Decode one raw webdataset sample (member bytes by extension). Raises ValueError naming the sample."""
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    if "json" not in sample or "codes.npy" not in sample:
        raise ValueError(f"{where}: missing members (has {sorted(k for k in sample if not k.startswith('__'))})")
    meta = json.loads(sample["json"])
    k, size = spec.num_codebooks, spec.codebook_size
    codes = validate_codes(np.load(io.BytesIO(sample["codes.npy"]), allow_pickle=False), k, size, where)
    ref_codes = None
    if "ref_codes.npy" in sample:
        ref_codes = validate_codes(np.load(io.BytesIO(sample["ref_codes.npy"]), allow_pickle=False), k, size,
                                   f"{where} (ref)")
    rejected = None
    if "rejected_codes.npy" in sample:
        rejected = validate_codes(np.load(io.BytesIO(sample["rejected_codes.npy"]), allow_pickle=False), k, size,
                                  f"{where} (rejected)")
    if not meta.get("text"):
        raise ValueError(f"{where}: empty text")
    extra = {k: v for k, v in meta.items() if k not in ("id", "text", "speaker", "scene", "ref_text", "frames",
                                                         "ref_frames", "rejected_frames")}
    return Utterance(id=meta.get("id", sample["__key__"]), text=meta["text"], codes=codes,
                     speaker=meta.get("speaker"), scene=meta.get("scene"), ref_text=meta.get("ref_text"),
                     ref_codes=ref_codes, meta=extra, rejected_codes=rejected)


def iter_tar_samples(path: str | Path, handler: Callable[[Exception], bool] = wds.reraise_exception) -> Iterator[dict]:
    """Raw samples of one shard via webdataset's tar expansion. ``handler`` sees open/truncation errors."""
    yield from wds.tarfile_to_samples(handler=handler)([{"url": str(path)}])


def write_shard(path: Path, samples: list[dict]) -> None:
    """Write a shard atomically: a temporary name, then rename, so a crash never leaves a partial
    shard under its final name."""
    tmp = path.with_name(path.name + ".tmp")
    with wds.TarWriter(str(tmp)) as sink:
        for sample in samples:
            sink.write(sample)
    tmp.replace(path)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_index(split_dir: str | Path) -> dict:
    path = Path(split_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build shards with `python launch/prepare_data.py`")
    return json.loads(path.read_text(encoding="utf-8"))


def index_spec(index: dict, where: str) -> AudioSpec:
    """The audio spec of a split's index (``where`` names it in errors)."""
    if "audio_spec" not in index:
        raise ValueError(f"{where} has no audio_spec: it was built by an older higgs-ds; rebuild it with "
                         f"`python launch/prepare_data.py build` (the codes need not change)")
    return AudioSpec.from_dict(index["audio_spec"], where)


def load_spec(split_dir: str | Path) -> AudioSpec:
    return index_spec(load_index(split_dir), str(Path(split_dir) / INDEX_NAME))


def is_pair_split(split_dir: str | Path, index: dict | None = None) -> bool:
    """Whether a split holds preference pairs: its index's ``pairs``, or, for a split indexed before that
    field, whether the first sample of its first shard has a ``rejected_codes`` member (reads one tar header
    run, not the split). A split of no shard holds no pair."""
    index = index if index is not None else load_index(split_dir)
    if "pairs" in index:
        return bool(index["pairs"])
    if not index.get("shards"):
        return False
    members, key = set(), None
    with tarfile.open(Path(split_dir) / index["shards"][0]["name"]) as tar:
        for member in tar:  # streamed: stops at the second sample's first member
            base, _, suffix = Path(member.name).name.partition(".")
            if key is not None and base != key:
                break
            key = base
            members.add(suffix)
    return "rejected_codes.npy" in members


def list_shards(split_dir: str | Path, index: dict | None = None) -> list[str]:
    """Shard paths of a split, in index order (falls back to a sorted glob without an index)."""
    split_dir = Path(split_dir)
    if index is None and not (split_dir / INDEX_NAME).is_file():
        shards = sorted(str(p) for p in split_dir.glob("*.tar"))
    else:
        index = index or load_index(split_dir)
        shards = [str(split_dir / s["name"]) for s in index["shards"]]
    if not shards:
        raise FileNotFoundError(f"no shards in {split_dir}")
    return shards
