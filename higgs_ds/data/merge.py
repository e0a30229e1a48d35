"""Merge the shard folders of a split build (``prepare_data build --part i/N``) into one split.

    merge_parts("data/train", ["data/train.parts/0", "data/train.parts/1"])

Checks first, writes nothing until they pass: every folder is a finished build; the parts are parts
0..N-1 of one N-way split of one manifest (its sha256); all codes share one audio spec; no sample id
is in two parts. Then the tars are hard-linked into the output folder (copied across filesystems),
and ``shards.json`` + ``rejects.jsonl`` are written with the shards in part order (the manifest's
order) and the rejects and counts of every part. The output folder is new or an earlier merge's: never a
part, a folder holding one, or a build (``higgs_ds.output_guard``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from higgs_ds.data.builder import PROGRESS_DIR, write_index
from higgs_ds.data.shards import INDEX_NAME, index_spec, is_pair_split
from higgs_ds.errors import DataError
from higgs_ds.output_guard import OutputKind

_WHERE = "prepare_data merge"
# a merged folder has a build's index but no .build/ of its own
MERGE_OUTPUT = OutputKind(_WHERE, files=(INDEX_NAME,), not_files=(PROGRESS_DIR,))


def _read_part(folder: Path) -> tuple[dict, list[dict], list[dict]]:
    """A finished part's index, its shards' stats (with the ids they hold) and its rejects."""
    if not (folder / INDEX_NAME).is_file():
        raise DataError(f"{folder} has no {INDEX_NAME}: the build of this part has not finished", where=_WHERE,
                        fix="run (or re-run, it resumes) its `prepare_data build --part i/N`, then merge")
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    stats = []
    for shard in index["shards"]:
        path = folder / PROGRESS_DIR / f"{Path(shard['name']).stem}.stats.json"
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if "ids" not in record:
            raise DataError(f"{path} is missing or lists no sample ids (built by an older higgs-ds)", where=_WHERE,
                            fix=f"rebuild {folder} with `prepare_data build --part i/N`")
        stats.append({**record, "rejects": []})  # the part's rejects.jsonl holds all of its rejects
    rejects_file = folder / "rejects.jsonl"
    rejects = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if rejects_file.is_file() else []
    return index, stats, rejects


def _check_parts(folders: list[Path], indexes: list[dict]) -> list[int]:
    """The order to merge in (part order); raises unless the folders are parts 0..N-1 of one split build."""
    parts = [index.get("part") for index in indexes]
    for folder, part in zip(folders, parts, strict=True):
        if part is None:
            raise DataError(f"{folder} is a whole build, not a part of a split build", where=_WHERE,
                            fix="build the parts with `prepare_data build --part i/N` (a whole build needs no merge)")
    first = parts[0]
    for folder, part in zip(folders, parts, strict=True):
        if (part["count"], part["manifest_sha256"]) != (first["count"], first["manifest_sha256"]):
            raise DataError(f"{folder} is part {part['index']}/{part['count']} of {part['manifest']}, {folders[0]} "
                            f"part {first['index']}/{first['count']} of {first['manifest']}: not one split build",
                            where=_WHERE, fix="merge the parts of one manifest, all built with the same N")
    seen: dict[int, Path] = {}
    for folder, part in zip(folders, parts, strict=True):
        if part["index"] in seen:
            raise DataError(f"part {part['index']}/{part['count']} given twice: {seen[part['index']]} and {folder}",
                            where=_WHERE, fix="give each part folder once")
        seen[part["index"]] = folder
    missing = sorted(set(range(first["count"])) - set(seen))
    if missing:
        raise DataError(f"parts {missing} of {first['count']} are missing", where=_WHERE,
                        fix="build them (prepare_data build --part i/N) and give every part folder")
    return sorted(range(len(folders)), key=lambda i: parts[i]["index"])


def _check_ids(folders: list[Path], stats: list[list[dict]]) -> None:
    first_seen: dict[str, tuple[Path, str]] = {}
    for folder, shard_stats in zip(folders, stats, strict=True):
        for shard in shard_stats:
            for sample_id in shard["ids"]:
                if sample_id in first_seen:
                    other, other_shard = first_seen[sample_id]
                    raise DataError(f"sample id {sample_id!r} is in two parts: {other}/{other_shard} and "
                                    f"{folder}/{shard['name']}", where=_WHERE,
                                    fix="make the ids of the manifest unique and rebuild those parts")
                first_seen[sample_id] = (folder, shard["name"])


def _link(source: Path, target: Path) -> None:
    if target.exists():
        if target.samefile(source):
            return  # linked by an earlier merge
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, target)


def _refuse_empty(folders: list[Path], stats: list[list[dict]], rejects: list[list[dict]]) -> None:
    """Parts that together hold no sample would give a split that trains on nothing (as `build` refuses)."""
    if any(shard["samples"] for part in stats for shard in part):
        return
    rejected = sum(len(r) for r in rejects)
    why = f"every row was rejected ({rejected} rows; see each part's rejects.jsonl)" if rejected else "they hold no row"
    raise DataError(f"the {len(folders)} parts hold no sample: {why}", where=_WHERE,
                    fix="check the manifest the parts were built from, or pass --allow-empty to write an empty "
                        "shard set on purpose")


def merge_parts(out: str | Path, part_dirs: list[str | Path], allow_empty: bool = False) -> dict:
    """Check the parts, link their shards into ``out`` and write its index; returns the index. Parts holding
    no sample at all are refused unless `allow_empty`."""
    out, folders = Path(out), [Path(p) for p in part_dirs]
    if not folders:
        raise DataError("no part folders given", where=_WHERE, fix="list the folders the parts were built in")
    MERGE_OUTPUT.check(out, inputs=folders)
    read = [_read_part(folder) for folder in folders]
    order = _check_parts(folders, [index for index, _, _ in read])
    folders, read = [folders[i] for i in order], [read[i] for i in order]
    spec = index_spec(read[0][0], str(folders[0] / INDEX_NAME))
    for folder, (index, _, _) in zip(folders[1:], read[1:], strict=True):
        spec.require_match(index_spec(index, str(folder / INDEX_NAME)), f"part {folders[0]}", f"part {folder}",
                           "all parts must be encoded with the same codec and settings")
    _check_ids(folders, [stats for _, stats, _ in read])
    kinds = {folder: is_pair_split(folder, index) for folder, (index, _, _) in zip(folders, read, strict=True)
             if "pairs" in index or index["shards"]}  # an older empty part says nothing
    if len(set(kinds.values())) > 1:
        pair, plain = (next(f for f, k in kinds.items() if k is want) for want in (True, False))
        raise DataError(f"{pair} holds preference pairs, {plain} does not", where=_WHERE,
                        fix="merge the parts of one `build` or of one `preferences` run")
    if not allow_empty:
        _refuse_empty(folders, [stats for _, stats, _ in read], [rejects for _, _, rejects in read])
    MERGE_OUTPUT.create(out)
    for folder, (_, stats, _) in zip(folders, read, strict=True):
        for shard in stats:
            _link(folder / shard["name"], out / shard["name"])
    shard_stats = [shard for _, stats, _ in read for shard in stats]
    rejects = [r for _, _, part_rejects in read for r in part_rejects]
    return write_index(out, shard_stats, rejects, spec, pairs=any(kinds.values()))
