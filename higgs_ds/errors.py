"""User errors: bad input that the user can fix, reported by every command line the same way:

    error: <what> (<which file, key or sample>): <how to fix>

one line on stderr from rank 0, exit status 2. Before the rendezvous every rank checks the same
arguments and files, so another rank leaves the report to rank 0 (whose exit makes the launcher stop
every rank), but not for ever: exiting at once could have the launcher stop rank 0 before it printed
anything, so after `PEER_GRACE_S` a rank still running prints its own. After the rendezvous an error
can be one rank's alone (a shard only it reads, its own checkpoint file): that rank prints it at once,
as `rank N: error: ...`; an error every rank meets alike (`every_rank`: the run's disk is full or read-only)
is still left to rank 0. An error caused by a peer's exit is not reported as the rank's own. Any other
exception is a bug and keeps its traceback (that is what a bug report needs).

`run_cli(main, argv)` applies this to a command line's `main`; `ArgumentParser` reports flag errors in
the same form. Nothing here imports torch or the rest of the package, so the check costs nothing.
"""

from __future__ import annotations

import argparse
import os
import reprlib
import signal
import sys
import time
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """Bad input. `where` names the file, key or sample; `fix` says what to do about it."""

    exit_code = 2
    every_rank = False  # an error that every rank meets alike, even after the rendezvous (a full disk)

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


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 60, 60
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = 4


def quote(value: object, limit: int = 60) -> str:
    """`value` as a message quotes it: a repr of at most `limit` characters. A value can be megabytes (or a
    YAML alias tree far larger once expanded): its repr is never built in full."""
    text = repr(value[: limit + 1]) if isinstance(value, str) else _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# The longest error line printed: the head (what) and the tail (the fix) of a longer one are kept.
MAX_LINE = 2000


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= MAX_LINE else f"{text[: MAX_LINE // 2]} … {text[-MAX_LINE // 2:]}"


# How long a rank other than 0 that met bad input before the rendezvous waits for rank 0 to report it (and
# for the launcher to stop this rank) before it reports the error itself.
PEER_GRACE_S = 10.0


def _group_started() -> bool:
    """Whether this process has joined a process group (without importing torch when it has not)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def report(exc: UserError) -> None:
    rank = process_rank()
    if rank != 0 and (not _group_started() or exc.every_rank):
        # the launcher stops this rank with SIGTERM once rank 0 has exited: then quietly, with this status
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, lambda *_: os._exit(exc.exit_code))
        time.sleep(PEER_GRACE_S)
    print(f"{f'rank {rank}: ' if rank else ''}error: {one_line(exc)}", file=sys.stderr, flush=True)


# What gloo / NCCL raise on the surviving ranks when a peer exits: their own message would hide the
# peer's real one.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _peer_exited(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is a collective cut short by a peer's exit."""
    while exc is not None:
        if type(exc).__name__ in ("DistNetworkError", "DistBackendError") or any(s in str(exc) for s in _PEER_GONE):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_cli(main: Callable, argv: list[str] | None = None) -> int:
    """Call `main(argv)`; a `UserError` becomes one line and its exit status. Returns main's int status
    (0 when it returns anything else)."""
    try:
        result = main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command could stop cleanly: one line, the shell's status
        if process_rank() == 0:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if process_rank() != 0 and _peer_exited(exc):  # rank 0 says why, with its own error or traceback
            print(f"rank {process_rank()}: stopped: another rank exited ({type(exc).__name__})", file=sys.stderr)
            return 1
        if not isinstance(exc, UserError):
            raise
        report(exc)
        return exc.exit_code
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its flag errors (`--workers x`, a missing required flag) raised as ConfigError."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, where=self.prog, fix=f"see {self.prog} --help")
