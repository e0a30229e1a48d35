"""Ahead-of-time compilation of the kernels for real GPUs (scripts/kernels_aot), on a CPU-only machine.

The compiles run in subprocesses without TRITON_INTERPRET (this suite sets it, and the kernels read it
at import time). The checker is tested on its own too: a spilling kernel and hand-made rows must fail it.
"""

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.kernels_aot import report

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"sm_80", "sm_90", "sm_100"}


def _compile_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache")
    env["PYTHONPATH"] = str(REPO)
    return env


def _jit_kernel_names() -> set[str]:
    """`module.function` of every `@triton.jit` function named *_kernel in kernels/, read from the source."""
    names = set()
    for path in (REPO / "kernels").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and any(
                    ast.unparse(decorator).startswith("triton.jit") for decorator in node.decorator_list):
                names.add(f"{path.stem}.{node.name}")
    return names


@pytest.mark.integration
def test_one_variant_per_kernel_and_target_compiles(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "scripts.kernels_aot", "--one-per-kernel", "--out", str(out)],
                          cwd=REPO, env=_compile_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = report.read_json(out / "report.json")
    kernels = _jit_kernel_names()
    assert len(kernels) >= 9
    assert sorted((row.kernel, row.target) for row in rows) == sorted((k, t) for k in kernels for t in TARGETS)
    for row in rows:
        assert row.compiled, row
        assert row.registers > 0, row
        assert row.spills == 0 or row.note == report.justification(row.kernel, row.variant, row.spills), row
        assert 0 <= row.shared_bytes <= report.SHARED_LIMITS[report.arch_of(row.target)], row
        assert row.stack_bytes >= 0, row
    assert report.problems(rows) == []
    markdown = (out / "report.md").read_text()
    assert "| kernel | variant | target |" in markdown
    for target in TARGETS:
        assert f"**{target}**: {len(kernels)} of {len(kernels)} variants compiled" in markdown


SPILLING_KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def hoard_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Two BLOCK-long fp32 arrays live across a loop: with one warp, 2 * BLOCK / 32 values per thread."""
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    acc = tl.zeros((BLOCK,), tl.float32)
    for i in range(n):
        acc = acc * x + tl.load(x_ptr + offs + (i + 1) * BLOCK)
    tl.store(out_ptr + offs, acc)
'''

COMPILE_HOARD = '''
import dataclasses, json, sys
import torch
from scripts.kernels_aot import cubin, launches, report
import hoard
meta = torch.empty(8, device="meta")
launch = launches.Launch(hoard.hoard_kernel, (meta, meta, 64), {"BLOCK": 4096, "num_warps": 1}, "test")
variant = launches.specialize(launch, 90)
row = report.make_row(variant.kernel, variant.name, 90, cubin.compile_variant(variant))
print(json.dumps(dataclasses.asdict(row)))
'''


@pytest.mark.integration
def test_a_spilling_kernel_fails_the_check(tmp_path):
    """256 live fp32 values per thread cannot fit in 255 registers: ptxas spills and the checker must say so."""
    (tmp_path / "hoard.py").write_text(SPILLING_KERNEL)
    env = _compile_env(tmp_path)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{tmp_path}"
    proc = subprocess.run([sys.executable, "-c", COMPILE_HOARD], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    row = report.Row(**json.loads(proc.stdout.strip().splitlines()[-1]))
    assert row.compiled and row.target == "sm_90" and row.registers > 0
    assert row.spills > 0 and row.stack_bytes > 0
    found = report.problems([row])
    assert len(found) == 1 and "spills" in found[0] and "hoard_kernel" in found[0]
    reason = "test: accepted on purpose"
    table = {("hoard.*", "fp32 BLOCK=4096 *"): report.SpillAllowance(row.spills, reason)}
    assert report.problems([dataclasses.replace(row, note=reason)], table=table) == []
    smaller = {("hoard.*", "fp32 BLOCK=4096 *"): report.SpillAllowance(row.spills - 1, reason)}
    assert report.problems([dataclasses.replace(row, note=reason)], table=smaller) != []


def _row(**overrides) -> report.Row:
    fields = dict(kernel="codebook_ce._codebook_ce_fwd_kernel", variant="bf16 BLOCK_N=4 warps=4 stages=3",
                  target="sm_80", compiled=True, registers=128, spills=0, shared_bytes=1024, stack_bytes=0, note="")
    return report.Row(**{**fields, **overrides})


def test_checker_fails_on_each_kind_of_problem():
    reason = "measured faster than the non-spilling 8-warp config"
    table = {("codebook_ce.*", "bf16 *"): report.SpillAllowance(8, reason)}
    assert report.problems([_row()], table=table) == []
    limit_80 = report.SHARED_LIMITS[80]
    cases = {
        "did not compile": _row(compiled=False, registers=None, spills=None, shared_bytes=None, stack_bytes=None,
                                note="PTXASError: ptxas failed"),
        "no register count": _row(registers=0),
        "over the": _row(shared_bytes=limit_80 + 1),
        "no justification": _row(variant="fp16 BLOCK_N=4", spills=8),
        "not the table's justification": _row(spills=8, note="trust me"),
        "no justification covers": _row(spills=9, note=reason),  # more than the allowance
    }
    for expected, row in cases.items():
        found = report.problems([row], table=table)
        assert len(found) == 1 and expected in found[0], (expected, found)
    # the same shared memory fits Hopper's larger per-block limit
    assert report.problems([_row(shared_bytes=limit_80 + 1, target="sm_90")], table=table) == []
    justified = _row(spills=8, note=reason)
    assert report.problems([justified], table=table) == []
    assert report.problems([justified]) != []  # the shipped table does not cover it


def test_report_json_round_trip_and_schema(tmp_path):
    rows = [_row(), _row(target="sm_90", spills=4, note="why"),
            _row(compiled=False, registers=None, spills=None, shared_bytes=None, stack_bytes=None, note="error")]
    path = tmp_path / "report.json"
    report.write_json(path, rows)
    assert report.read_json(path) == rows
    assert set(json.loads(path.read_text())[0]) == {field.name for field in dataclasses.fields(report.Row)}
    bad_rows = {
        "fields": {k: v for k, v in dataclasses.asdict(_row()).items() if k != "stack_bytes"},
        "registers": {**dataclasses.asdict(_row()), "registers": "128"},
        "compiled": {**dataclasses.asdict(_row()), "compiled": 1},
        "spills": {**dataclasses.asdict(_row()), "spills": True},
    }
    for field, bad in bad_rows.items():
        path.write_text(json.dumps([dataclasses.asdict(_row()), bad]))
        with pytest.raises(ValueError, match=f"row 1 .*{field}"):
            report.read_json(path)
