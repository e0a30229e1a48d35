"""Soak run: a long CPU training run of the tiny demo model, watched for leaks. Not part of CI.

    python scripts/soak.py [--steps 2000] [--ranks 2] [--out runs/soak] [-- key=value ...]
    make soak

Launches `deepspeed launch/train.py` with recipes/demo.yaml (evals and predictions off, a checkpoint
every 250 steps so that saving and rotation are soaked too) and samples, every `--interval` seconds,
each rank's resident memory and open file descriptors (its DataLoader workers counted separately).
The step time is the wall time between metric lines. `soak.json` and `soak.md` in the run dir compare
the first and the last 10% of the steps; the exit code is 1 if memory or step time grew by
`--max-growth` percent or more, or if any process holds more file descriptors at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_processes(launcher: psutil.Process) -> dict[int, tuple[psutil.Process, list[psutil.Process]]]:
    """rank -> (rank process, its worker processes): the processes started with `--local_rank=N` whose
    parent was not (forked DataLoader workers inherit the command line)."""
    ranks = {}
    for proc in launcher.children(recursive=True):
        try:
            flag = next((a for a in proc.cmdline() if a.startswith("--local_rank=")), None)
            if flag and not any(a.startswith("--local_rank=") for a in proc.parent().cmdline()):
                ranks[int(flag.split("=", 1)[1])] = (proc, proc.children(recursive=True))
        except (psutil.Error, AttributeError):  # ended meanwhile (parent() is then None)
            continue
    return ranks


def sample(ranks: dict, step: int, t: float) -> list[dict]:
    rows = []
    for rank, (proc, workers) in sorted(ranks.items()):
        try:
            rows.append({"t": t, "step": step, "rank": rank, "rss_mb": proc.memory_info().rss / 2**20,
                         "fds": proc.num_fds(), "workers_rss_mb": sum(w.memory_info().rss for w in workers) / 2**20,
                         "workers_fds": sum(w.num_fds() for w in workers)})
        except psutil.Error:  # the process ended between listing and reading
            continue
    return rows


def last_step(metrics: Path, offset: int, seen: list[tuple[float, int]]) -> int:
    """Read new metric lines from `offset`; record (time first seen, step) for each."""
    if not metrics.exists():
        return offset
    with metrics.open() as f:
        f.seek(offset)
        for line in f:
            if not line.endswith("\n"):
                break
            record = json.loads(line)
            if record.get("kind") == "train":
                seen.append((time.monotonic(), record["step"]))
            offset += len(line.encode())
    return offset


def growth(first: list[float], last: list[float]) -> float:
    return 100.0 * (statistics.mean(last) - statistics.mean(first)) / statistics.mean(first)


def summarise(samples: list[dict], seen: list[tuple[float, int]], steps: int) -> dict:
    lo, hi = steps // 10, steps - steps // 10
    step_times = [((t1 - t0) / (s1 - s0), s1) for (t0, s0), (t1, s1) in itertools.pairwise(seen) if s1 > s0]
    report = {"steps": steps, "first": f"steps 1-{lo}", "last": f"steps {hi + 1}-{steps}", "ranks": {}}
    report["step_time_s"] = {
        "first": statistics.mean(t for t, s in step_times if s <= lo),
        "last": statistics.mean(t for t, s in step_times if s > hi)}
    report["step_time_s"]["growth_pct"] = growth([report["step_time_s"]["first"]], [report["step_time_s"]["last"]])
    for rank in sorted({r["rank"] for r in samples}):
        mine = [r for r in samples if r["rank"] == rank]
        first = [r for r in mine if 0 < r["step"] <= lo]
        last = [r for r in mine if r["step"] > hi]
        entry = {}
        for key in ("rss_mb", "workers_rss_mb", "fds", "workers_fds"):
            a, b = [r[key] for r in first], [r[key] for r in last]
            # handles: the median, so that files open during one checkpoint save do not count as growth
            centre = statistics.median if "fds" in key else statistics.mean
            entry[key] = {"first": centre(a), "last": centre(b), "max": max(r[key] for r in mine)}
            entry[key]["growth_pct"] = growth([entry[key]["first"]], [entry[key]["last"]]) if centre(a) else 0.0
        entry["samples"] = {"first": len(first), "last": len(last)}
        report["ranks"][rank] = entry
    return report


def verdict(report: dict, max_growth: float) -> list[str]:
    problems = []
    if report["step_time_s"]["growth_pct"] >= max_growth:
        problems.append(f"step time grew {report['step_time_s']['growth_pct']:.1f}%")
    for rank, entry in report["ranks"].items():
        for key in ("rss_mb", "workers_rss_mb"):
            if entry[key]["growth_pct"] >= max_growth:
                problems.append(f"rank {rank} {key} grew {entry[key]['growth_pct']:.1f}%")
        for key in ("fds", "workers_fds"):
            if entry[key]["last"] > entry[key]["first"]:
                problems.append(f"rank {rank} {key}: {entry[key]['first']:.1f} -> {entry[key]['last']:.1f}")
    return problems


def markdown(report: dict, problems: list[str]) -> str:
    st = report["step_time_s"]
    lines = [f"# Soak: {report['steps']} steps, first ({report['first']}) vs last ({report['last']}) 10%", "",
             "| what | first 10% | last 10% | growth |", "|---|---|---|---|",
             f"| step time (s, all ranks) | {st['first']:.3f} | {st['last']:.3f} | {st['growth_pct']:+.1f}% |"]
    for rank, entry in report["ranks"].items():
        for key, label in (("rss_mb", "RSS MiB"), ("workers_rss_mb", "data workers' RSS MiB"),
                           ("fds", "open fds"), ("workers_fds", "data workers' open fds")):
            e = entry[key]
            lines.append(f"| rank {rank} {label} | {e['first']:.1f} | {e['last']:.1f} | {e['growth_pct']:+.1f}% |")
    lines += ["", "verdict: " + ("; ".join(problems) if problems else "flat (no growth at or above the limit)")]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default="runs/soak", help="run dir (replaced)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples")
    p.add_argument("--max-growth", type=float, default=5.0, help="percent")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides of recipes/demo.yaml")
    args = p.parse_args()
    if args.steps < 20:
        p.error("--steps must be >= 20 (the first and last 10% are compared)")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    deepspeed = Path(sys.executable).parent / "deepspeed"
    cmd = [str(deepspeed), "--num_gpus", str(args.ranks), "--master_port", str(free_port()), "launch/train.py",
           "--deepspeed", "ds_configs/zero3.json", "--config", "recipes/demo.yaml", f"run_dir={out}",
           f"steps={args.steps}", "log_every=10", "eval_every=0", "predict_every=0", "audio_eval.every=0",
           "save_every=250", "keep_last=2", "wandb_project=null", *args.overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(" ".join(cmd), flush=True)
    samples, seen, offset = [], [], 0
    with open(out / "soak.log", "w") as log:
        launcher = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(launcher.pid)
        while launcher.poll() is None:
            offset = last_step(out / "metrics.jsonl", offset, seen)
            step = seen[-1][1] if seen else 0
            samples += sample(rank_processes(watched), step, time.monotonic())
            time.sleep(args.interval)
    last_step(out / "metrics.jsonl", offset, seen)
    (out / "soak_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if launcher.returncode != 0 or not seen or seen[-1][1] != args.steps:
        print(f"training exited {launcher.returncode} at step {seen[-1][1] if seen else 0}: see {out / 'soak.log'}")
        return 2
    report = summarise(samples, seen, args.steps)
    problems = verdict(report, args.max_growth)
    report["problems"] = problems
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    (out / "soak.md").write_text(markdown(report, problems))
    print(markdown(report, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
