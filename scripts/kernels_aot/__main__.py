"""`python -m scripts.kernels_aot`: compile every kernel variant for real GPUs and write the report.

    python -m scripts.kernels_aot                    # the full matrix, sm_80 / sm_90 / sm_100, 2 processes
    python -m scripts.kernels_aot --one-per-kernel   # one variant per kernel and target (the CI test)

Writes report.json and report.md to --out; exits 1 when any variant fails to compile, uses more
shared memory than its target allows, or spills without a justification, or when an entry kernel
of the package is launched by no dispatcher scenario.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.kernels_aot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/kernels_aot"), help="report folder")
    parser.add_argument("--targets", default="80,90,100", help="compute capabilities, comma-separated")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes")
    parser.add_argument("--one-per-kernel", action="store_true",
                        help="only one variant per kernel and target (bf16 at the released shape when launched)")
    args = parser.parse_args(argv)
    args.arches = [int(item) for item in args.targets.split(",") if item.strip()]
    if not args.arches or args.jobs < 1:
        parser.error("need at least one target and one job")
    return args


def _one_per_kernel(planned: list) -> list:
    """Per kernel and target the variant the released model trains with when there is one, else the first."""
    chosen: dict[tuple, object] = {}
    for item in planned:
        key = (item.variant.kernel, item.variant.arch)
        production = any(scenario.startswith("released bf16 ") for scenario in item.scenarios)
        if key not in chosen or (production and not chosen[key][0]):
            chosen[key] = (production, item)
    return [item for _, item in chosen.values()]


def main(argv: list[str] | None = None) -> int:
    # Before anything imports triton or the kernels: they read it at import time.
    os.environ.pop("TRITON_INTERPRET", None)
    args = _parse(argv)
    from . import cubin, launches, report

    launches.require_compiling_process()
    start = time.perf_counter()
    planned = launches.plan(launches.capture_launches(), args.arches)
    uncovered = sorted(set(launches.entry_kernels()) - {item.variant.kernel for item in planned})
    if args.one_per_kernel:
        planned = _one_per_kernel(planned)
    print(f"compiling {len(planned)} variants for {', '.join(map(report.target_name, args.arches))} "
          f"with {args.jobs} process(es)", flush=True)
    variants = [item.variant for item in planned]
    if args.jobs == 1:
        results = [cubin.compile_variant(variant) for variant in variants]
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(cubin.compile_variant, variants))
    rows = [report.make_row(variant.kernel, variant.name, variant.arch, result)
            for variant, result in zip(variants, results, strict=True)]
    found = report.problems(rows) + [f"{name}: no dispatcher scenario launches this kernel" for name in uncovered]
    seconds = time.perf_counter() - start
    compile_seconds = sum(result.seconds for result in results)
    header = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} CPUs, no GPU "
              f"needed): {len(rows)} variants in {seconds:.0f} s wall, {compile_seconds:.0f} s of compiling, "
              f"{args.jobs} process(es){', one variant per kernel and target' if args.one_per_kernel else ''}.")
    report.write_json(args.out / "report.json", rows)
    report.write_markdown(args.out / "report.md", rows, [item.scenarios for item in planned], found, header)
    print(header)
    print("\n".join(report.summary_by_target(rows)))
    for problem in found:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
