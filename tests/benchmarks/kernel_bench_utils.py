"""Helpers for the kernel benchmarks: honest peak memory on CPU and GPU, and a ratio table.

CPU peak memory is the process's peak resident set (VmHWM) during one call, minus the resident set
before it. The peak counter is reset through /proc/self/clear_refs and glibc's free heap is returned
with malloc_trim first, so freed memory left over from an earlier impl cannot hide an allocation.
Torch's CPU allocator uses malloc directly, so this sees every tensor the call touches (tracemalloc
sees none of them). On CUDA the same numbers come from torch.cuda's peak allocator statistics.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
from pathlib import Path

import torch

RESULTS_DIR = Path(os.environ.get("HIGGS_BENCH_DIR", "runs/benchmarks"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Benchmark shapes, HIGGS_BENCH_SHAPES: "full" (the released model's: H=3072, I=8192, 8192 tokens, V=128256,
# 8x1026 audio rows; the default on CUDA), "cpu" (scaled so naive fits in 24 GiB beside other jobs; the
# default on CPU) or "tiny" (seconds on a CPU: checks the benchmarks' plumbing, measures nothing).
SHAPES = os.environ.get("HIGGS_BENCH_SHAPES") or ("full" if DEVICE == "cuda" else "cpu")
if SHAPES not in ("full", "cpu", "tiny"):
    raise ValueError(f"HIGGS_BENCH_SHAPES={SHAPES!r}: use full, cpu or tiny")


def pick_shape(**by_shapes: dict) -> dict:
    """The shape dict for the selected HIGGS_BENCH_SHAPES, e.g. `pick_shape(full=..., cpu=..., tiny=...)`."""
    return by_shapes[SHAPES]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def peak_memory_mib(fn, device: str) -> float:
    """Peak extra memory (MiB) while `fn()` runs, above what was live before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def timed(benchmark, fn, device: str, rounds: int = 3) -> float:
    """Median seconds of `fn` over `rounds` (after one warm-up), via pytest-benchmark."""

    def run():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    return statistics.median(benchmark.stats.stats.data)


class RatioTable:
    """Collects (impl -> seconds, MiB) for one comparison and prints/saves ratios vs `ours`."""

    def __init__(self, name: str, title: str):
        self.name, self.title, self.rows = name, title, {}

    def add(self, impl: str, seconds: float, mib: float) -> None:
        self.rows[impl] = {"seconds": seconds, "peak_mib": mib}

    def render(self) -> str:
        ours = self.rows.get("ours")
        lines = [f"### {self.title}", "", "| impl | time (s) | peak mem (MiB) | time / ours | mem / ours |",
                 "|---|---|---|---|---|"]
        for impl, r in self.rows.items():
            t_ratio = f"{r['seconds'] / ours['seconds']:.2f}x" if ours else "-"
            m_ratio = f"{r['peak_mib'] / max(ours['peak_mib'], 1e-3):.1f}x" if ours else "-"
            lines.append(f"| {impl} | {r['seconds']:.3f} | {r['peak_mib']:.1f} | {t_ratio} | {m_ratio} |")
        return "\n".join(lines) + "\n"

    def save(self, device: str) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stem = RESULTS_DIR / f"kernel_{self.name}_{device}"
        stem.with_suffix(".json").write_text(json.dumps({"title": self.title, "rows": self.rows}, indent=2))
        stem.with_suffix(".md").write_text(self.render())
        return stem.with_suffix(".md")


def report(request, table: RatioTable, device: str) -> None:
    """Print the table to the terminal (even with output capture) and save it under RESULTS_DIR."""
    path = table.save(device)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    text = "\n" + table.render() + f"(saved to {path})\n"
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)
