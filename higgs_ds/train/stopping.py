"""When a run stops early: signals, and the process the user started going away.

Every early stop takes one path, the one a Slurm preemption takes: the rank records why, finishes its step,
all ranks agree (`loop.next_micro_batches`), write a checkpoint and exit. The reasons:

- SIGTERM (a scheduler, `kill`), SIGUSR1 (Slurm's time-limit warning), SIGHUP (the terminal closed): exit 0,
  as a preempted job that can resume;
- SIGINT (Ctrl-C): exit 130, the shell's status for an interrupt;
- the launcher the user started exited. DeepSpeed's runner (`deepspeed ...`) forwards SIGTERM to the ranks
  only on several nodes, and a rank's parent is DeepSpeed's per-node `launch.py`, which outlives the
  runner: so a rank watches its launcher itself, the parent of that `launch.py` (or its own parent under
  another launcher), and stops when it is gone. Exit 0.

Before the training loop installs these handlers, Ctrl-C ends the process at once (`run_cli` prints one
line and exits 130); a single process started without a launcher watches nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

INTERRUPTED = 130  # exit status after Ctrl-C
LAUNCHER_EXITED = "launcher exited"
_DEEPSPEED_NODE_LAUNCHER = "deepspeed.launcher.launch"
POLL_S = 0.5

_received: dict[str, str | None] = {"reason": None}


def reason() -> str | None:
    """Why this process was asked to stop (a signal name or `LAUNCHER_EXITED`), or None."""
    return _received["reason"]


def exit_status() -> int:
    return INTERRUPTED if _received["reason"] == "SIGINT" else 0


def _record(why: str) -> None:
    if _received["reason"] is None or why == "SIGINT":  # Ctrl-C decides the exit status whatever came first
        _received["reason"] = why


def catch_stop_signals() -> None:
    """Ask for a checkpoint and a clean exit at the next step boundary on SIGTERM, SIGUSR1, SIGHUP or SIGINT,
    and when the launcher goes away."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: _record(signal.Signals(signum).name))
    launcher = launcher_to_watch()
    if launcher is not None:
        threading.Thread(target=_watch, args=(launcher,), name="launcher-watch", daemon=True).start()


def launcher_to_watch(pid: int | None = None, env: dict | None = None) -> tuple[int, str] | None:
    """(pid, start time) of the process the user started, for a rank a launcher started; None for a lone
    process (nothing to watch: a backgrounded run must outlive its shell) and under Slurm (srun signals its
    tasks itself). `pid`: the rank's parent (default: ours)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env or "SLURM_PROCID" in env:
        return None
    pid = os.getppid() if pid is None else pid
    if _DEEPSPEED_NODE_LAUNCHER in _cmdline(pid):  # the runner started this per-node launcher
        pid = _parent(pid)
    started = _start_time(pid)
    return None if pid <= 1 or started is None else (pid, started)


def is_alive(pid: int, started: str) -> bool:
    """The same process (not a later one that reused the pid) exists and has not exited (a zombie has)."""
    stat = _stat(pid)
    return stat is not None and stat[22 - 3] == started and stat[0] != "Z"


def _watch(launcher: tuple[int, str]) -> None:
    stopped = threading.Event()
    while not stopped.wait(POLL_S):
        if not is_alive(*launcher):
            _record(LAUNCHER_EXITED)
            return


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on: [state, ppid, ...]; the command name may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _parent(pid: int) -> int:
    stat = _stat(pid)
    return int(stat[1]) if stat else 0


def _start_time(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[22 - 3] if stat else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
