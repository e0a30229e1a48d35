"""Start a script on N local CPU ranks the way `deepspeed --num_gpus N` does, without its two extra
interpreters (about 4 s and a 1 s polling loop per run): the same environment per rank (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_SIZE, MASTER_ADDR/PORT, CROSS_RANK/SIZE, `--local_rank=i`), and the same supervision:
when a rank exits non-zero the others are stopped and that code is returned; SIGTERM or SIGINT stops
every rank. Tests about the launcher itself use `deepspeed` (tests/harness.py, `launcher="deepspeed"`).

    python tests/ranks.py --ranks 2 --master_port 29500 launch/train.py --deepspeed ... key=value ...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

GRACE_S = 30  # what DeepSpeed's launcher gives a rank between SIGTERM and SIGKILL


def rank_env(rank: int, ranks: int, master_port: int) -> dict[str, str]:
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port), "WORLD_SIZE": str(ranks),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_SIZE": str(ranks), "CROSS_RANK": "0",
            "CROSS_SIZE": "1"}


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--master_port", type=int, required=True)
    parser.add_argument("script")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    procs = [subprocess.Popen([sys.executable, "-u", args.script, f"--local_rank={rank}", *args.script_args],
                              env=rank_env(rank, args.ranks, args.master_port)) for rank in range(args.ranks)]

    def on_signal(signum, _frame):
        stop(procs)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        codes = [proc.poll() for proc in procs]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            stop(procs)
            return failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
