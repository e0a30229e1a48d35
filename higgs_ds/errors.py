"""User errors: bad input that the user can fix, reported by every command line the same way:

    error: <what> (<which file, key or sample>): <how to fix>

one line on stderr, from rank 0 only, exit status 2. Other ranks exit with the same status and print
nothing: they met the same input, or rank 0's exit cut their collectives short. Any other exception
is a bug and keeps its traceback (that is what a bug report needs).

`run_cli(main, argv)` applies this to a command line's `main`; `ArgumentParser` reports flag errors in
the same form. Nothing here imports torch or the rest of the package, so the check costs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """Bad input. `where` names the file, key or sample; `fix` says what to do about it."""

    exit_code = 2

    def __init__(self, *args, where: str | None = None, fix: str | None = None) -> None:
        if args and isinstance(args[0], str) and (where or fix):
            args = (describe(args[0], where, fix), *args[1:])
        super().__init__(*args)


class ConfigError(UserError, ValueError):
    """A recipe, an override, a flag or a DeepSpeed JSON that cannot be used."""


class DataError(UserError, ValueError):
    """A manifest, a sample, an audio file or a shard set that cannot be used."""


class CheckpointError(UserError, ValueError):
    """A checkpoint, a run directory or an export target that cannot be used."""


class CodecError(UserError, ValueError):
    """A codec folder or file that cannot be used."""


def describe(what: str, where: str | None = None, fix: str | None = None) -> str:
    return what + (f" ({where})" if where else "") + (f": {fix}" if fix else "")


def process_rank() -> int:
    """This process's rank as the launcher set it (DeepSpeed / torchrun: RANK; srun: SLURM_PROCID)."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def report(exc: UserError) -> None:
    if process_rank() == 0:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)


# What gloo / NCCL raise on the surviving ranks when a peer exits: their own message would hide the
# peer's real one.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _peer_exited(exc: BaseException) -> bool:
    return type(exc).__name__ in ("DistNetworkError", "DistBackendError") or any(s in str(exc) for s in _PEER_GONE)


def run_cli(main: Callable, argv: list[str] | None = None) -> int:
    """Call `main(argv)`; a `UserError` becomes one line and its exit status. Returns main's int status
    (0 when it returns anything else)."""
    try:
        result = main(argv)
    except UserError as exc:
        report(exc)
        return exc.exit_code
    except Exception as exc:
        if process_rank() != 0 and _peer_exited(exc):  # rank 0 says why, with its own error or traceback
            print(f"rank {process_rank()}: stopped: another rank exited ({type(exc).__name__})", file=sys.stderr)
            return 1
        raise
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its flag errors (`--workers x`, a missing required flag) raised as ConfigError."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, where=self.prog, fix=f"see {self.prog} --help")
