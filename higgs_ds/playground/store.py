"""Where the playground keeps what it generated: one folder per generation (wav, codes, spectrogram and the
settings that made it, as JSON), the newest `keep` kept.

    <save_dir>/.made_by.json                      the output guard's marker ("playground")
    <save_dir>/20261207-081500-123456-a/          out.wav, codes.npy, spectrogram.png, settings.json

Folder names sort by time, so pruning drops the oldest; a generation is written into a hidden sibling and
renamed into place, so a folder under its final name is always complete.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from higgs_ds.output_guard import OutputKind

PLAYGROUND_OUTPUT = OutputKind("playground")
KEEP = 200  # generations kept per save folder
_NAME = re.compile(r"^\d{8}-\d{6}-\d{6}-[a-z]$")  # a generation folder; nothing else is ever pruned


class GenerationStore:
    """The save folder of one playground; `check` refuses a folder that overlaps the model's inputs."""

    def __init__(self, folder: Path, inputs: Iterable[Path] = (), keep: int = KEEP, where: str = "--save-dir"):
        if keep < 1:
            raise ValueError(f"GenerationStore: keep={keep} must be >= 1")
        self.folder, self.keep = Path(folder), keep
        PLAYGROUND_OUTPUT.check(self.folder, inputs=tuple(inputs), where=where)

    def entries(self) -> list[Path]:
        """The saved generations, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and _NAME.match(p.name))

    def new_name(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}"
        taken = {p.name for p in self.entries()}
        for suffix in "abcdefghijklmnopqrstuvwxyz":
            if f"{stamp}-{suffix}" not in taken:
                return f"{stamp}-{suffix}"
        raise RuntimeError(f"{self.folder}: 26 generations in one microsecond")

    def save(self, files: dict[str, callable], settings: dict, now: float | None = None) -> Path:
        """Write one generation: `files` maps a file name to a function writing that file's path; then
        settings.json. Returns the folder; the oldest folders beyond `keep` are removed."""
        PLAYGROUND_OUTPUT.create(self.folder)
        name = self.new_name(now)
        staging = self.folder / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for file_name, write in files.items():
                write(staging / file_name)
            (staging / "settings.json").write_text(json.dumps(settings, ensure_ascii=False, indent=1) + "\n",
                                                   encoding="utf-8")
            staging.rename(self.folder / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.prune()
        return self.folder / name

    def prune(self) -> list[Path]:
        """Remove the oldest generations beyond `keep`; returns what was removed."""
        entries = self.entries()
        removed = entries[: max(0, len(entries) - self.keep)]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed
