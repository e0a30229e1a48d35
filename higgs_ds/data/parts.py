"""One build split into N parts that run anywhere (one per node, a Slurm job array), merged afterwards.

Part i of N is the contiguous range of manifest *lines* ``[1 + i*L//N, 1 + (i+1)*L//N)`` of a manifest
of L lines: a pure function of the manifest's bytes, known before any line is parsed or any audio header
read, so each part touches only its own rows. Contiguous ranges (not a hash of the id) keep the
manifest's order: the merged shards list the samples in the order a single build would. Parts hold
equal numbers of lines; shuffle the manifest first if it is sorted by duration and you want parts of
equal hours.

A part's shards are named ``shard-p{i:04d}of{N:04d}-{n:06d}.tar``, so the shards of all parts can
sit in one folder without colliding; its ``shards.json`` records which part it is
(:func:`part_record`), which :mod:`higgs_ds.data.merge` checks.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from higgs_ds.data.shards import SHARD_NAME
from higgs_ds.errors import ConfigError

_PART = re.compile(r"^(\d+)/(\d+)$")


def parse_part(text: str) -> tuple[int, int]:
    """"i/N" -> (i, N), with 0 <= i < N."""
    match = _PART.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise ConfigError(f"--part {text!r} is not i/N with 0 <= i < N", where="--part",
                          fix="e.g. --part 0/4 for the first of four parts (a Slurm array task: "
                              "--part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return int(match[1]), int(match[2])


def count_lines(path: str | Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b"")) + _unterminated(path)


def _unterminated(path: str | Path) -> int:
    """1 when the file's last line has no line break (it is a line all the same)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return 0
        f.seek(-1, 2)
        return int(f.read(1) != b"\n")


def part_lines(num_lines: int, part: tuple[int, int]) -> tuple[int, int]:
    """The 1-based manifest line numbers [first, end) of part ``(i, N)``."""
    index, count = part
    return 1 + index * num_lines // count, 1 + (index + 1) * num_lines // count


def shard_name(part: tuple[int, int] | None, shard_index: int) -> str:
    if part is None:
        return SHARD_NAME.format(shard_index)
    return f"shard-p{part[0]:04d}of{part[1]:04d}-{shard_index:06d}.tar"


def part_record(manifest: str | Path, part: tuple[int, int], lines: tuple[int, int]) -> dict:
    """What a part's ``shards.json`` says about it: which part, which lines, of which manifest."""
    return {"index": part[0], "count": part[1], "lines": list(lines), "manifest": str(manifest),
            "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest()}
