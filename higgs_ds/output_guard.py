"""The one guard every command that writes puts in front of its output, so that no `--out` a user types
can damage an input or another command's output.

    BUILD = OutputKind("prepare_data build", files=(".build",))
    BUILD.check(out, inputs=(manifest,))   # before any work: refuses with one ConfigError, writes nothing
    BUILD.create(out)                      # when the command first writes: the folder and its marker

The rules:
- every output folder holds a marker (`.made_by.json`) naming the command that made it;
- an `--out` that is, contains or lies inside an input of the command is refused; a command documented to
  add one named file to its input (`adds`: report.html into a run) may write that file there, and only it;
- an existing non-empty `--out` made by another command, or holding files no command of ours made, is
  refused; a folder from before markers existed counts as the command's own when it has the command's
  files (`files`, and none of `not_files`);
- a command re-run into its own output carries on as before (a build resumes); a command with
  `--overwrite` (export) refuses its own non-empty output without it, and with it replaces the folder
  whole: the caller writes a sibling folder and renames it into place (`replace_folder`).

A command that searches its input folders (segment) skips its `--out` (`inside`) and every folder its kind
`owns`, so it never reads its own output back as input.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from higgs_ds.errors import ConfigError

MARKER = ".made_by.json"


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies under it (symbolic links followed)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def made_by(folder: str | Path) -> str | None:
    """The command the folder's marker names; "an unknown command" for an unreadable marker, None without one."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        return None
    try:
        command = json.loads(marker.read_text(encoding="utf-8"))["command"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "an unknown command"
    return command if isinstance(command, str) else "an unknown command"


@dataclass(frozen=True)
class OutputKind:
    """What one command writes: the name its marker records, and how to know its folders from before markers."""

    command: str  # e.g. "prepare_data build": recorded in the marker, named in errors
    files: tuple[str, ...] = ()  # an unmarked folder is this command's when it has all of these ...
    not_files: tuple[str, ...] = ()  # ... and none of these (another command's that shares the files above)
    adds: str | None = None  # the one file this command writes into an input folder (report.html)

    def owns(self, folder: str | Path) -> bool:
        """Whether `folder` was made by this command (its marker, or before markers: its files)."""
        folder = Path(folder)
        maker = made_by(folder)
        if maker is not None:
            return maker == self.command
        return bool(self.files) and all((folder / name).exists() for name in self.files) \
            and not any((folder / name).exists() for name in self.not_files)

    def check(self, out: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool | None = None,
              where: str = "--out") -> Path:
        """Refuse `out` as this command's output folder unless it is new, empty or this command's own.
        `overwrite`: None for a command that carries on in its own folder (a build resumes); False or True
        for a command with --overwrite, whose own non-empty folder is replaced only with it. Reads only."""
        out = Path(out)
        _refuse_overlap(out, inputs, where)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} is a file", where=where, fix="give a folder")
        if not out.is_dir() or not any(out.iterdir()):
            return out
        maker = made_by(out)
        if maker is not None and maker != self.command:
            raise ConfigError(f"{out} was written by {maker}, not {self.command}", where=where,
                              fix=f"give {self.command} a new folder")
        if not self.owns(out):
            raise ConfigError(f"{out} is not empty and was not written by {self.command}", where=where,
                              fix="choose a new or empty folder")
        if overwrite is False:
            raise ConfigError(f"{out} is not empty", where=where,
                              fix="choose a new folder, or pass --overwrite to replace this output whole")
        return out

    def check_file(self, out: str | Path, inputs: Iterable[str | Path] = (), where: str = "--out",
                   is_own: Callable[[Path], bool] | None = None) -> Path:
        """Refuse `out` as this command's output file: a folder, an input, a file inside an input folder other
        than `adds`, or an existing file that `is_own` does not recognise as this command's. Reads only."""
        out = Path(out)
        if out.is_dir():
            raise ConfigError(f"{out} is a folder", where=where, fix="give a file path")
        inputs = [Path(i) for i in inputs]
        if self.adds and out.name == self.adds:  # the one file it adds to an input folder: that folder is no bar
            inputs = [i for i in inputs if i.resolve() != out.parent.resolve()]
        _refuse_overlap(out, inputs, where)
        if out.exists() and is_own is not None and not is_own(out):
            raise ConfigError(f"{out} exists and was not written by {self.command}", where=where,
                              fix="give a new file path")
        return out

    def create(self, folder: str | Path) -> Path:
        """The output folder (parents too), marked as this command's. Call it once `check` has passed."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER
        if made_by(folder) != self.command:
            tmp = marker.with_name(MARKER + ".tmp")
            tmp.write_text(json.dumps({"command": self.command}) + "\n", encoding="utf-8")
            tmp.replace(marker)
        return folder


def _refuse_overlap(out: Path, inputs: Iterable[str | Path], where: str) -> None:
    """An output that is, contains or lies inside an input would overwrite or delete it (or be read back)."""
    for given in inputs:
        contains, within = inside(given, out), inside(out, given)
        if contains or within:
            relation = "is" if contains and within else "contains" if contains else "lies inside"
            raise ConfigError(f"{out} {relation} the input {given}", where=where,
                              fix="write the output outside the command's inputs")


def replace_folder(staging: Path, out: Path) -> None:
    """Move a finished sibling folder into place at `out`; an old `out` is renamed away first and deleted
    last, so `out` is never a mix of the two (between the renames it is briefly absent)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
