"""Compile one kernel variant to a cubin and read its resource usage, without a GPU.

`triton.compile` runs the whole pipeline down to the triton wheel's bundled ptxas (ptxas-blackwell
for sm_100). Registers, stack and static shared memory come from the bundled `cuobjdump
--dump-resource-usage` on the cubin; spill bytes from ptxas's `-v` log (cuobjdump does not report
them); dynamic shared memory from the compiled kernel's metadata.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_USAGE = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


@dataclass
class Compiled:
    compiled: bool
    registers: int | None = None
    spills: int | None = None  # bytes spilled to local memory: stores + loads
    shared_bytes: int | None = None  # dynamic (Triton's allocation) + static shared memory per block
    stack_bytes: int | None = None  # per-thread stack frame + local memory
    seconds: float = 0.0
    error: str = ""


def resource_usage(cubin: bytes, kernel_name: str) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of one function, from `cuobjdump --dump-resource-usage`."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        listing = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", handle.name],
                                 check=True, capture_output=True, text=True).stdout
    section = listing.split(f"Function {kernel_name}:", 1)
    if len(section) != 2:
        raise RuntimeError(f"cuobjdump lists no function {kernel_name}:\n{listing}")
    usage = {key: int(value) for key, value in _USAGE.findall(section[1].split("Function ", 1)[0])}
    missing = {"REG", "STACK", "SHARED", "LOCAL"} - set(usage)
    if missing:
        raise RuntimeError(f"cuobjdump gave no {sorted(missing)} for {kernel_name}:\n{listing}")
    return usage


def spill_bytes(ptxas_log: str) -> int:
    """Spill stores + loads from ptxas's `-v` log (one line per function; Triton emits one)."""
    found = _SPILLS.findall(ptxas_log)
    if not found:
        raise RuntimeError(f"no spill figures in the ptxas log:\n{ptxas_log}")
    return sum(int(stores) + int(loads) for stores, loads in found)


def compile_kernel(kernel, arch: int, signature: dict, constexprs: dict, attrs: dict, options: dict) -> Compiled:
    """Compile for `sm_<arch>` and measure; a compile error becomes `compiled=False` with its message."""
    knobs.nvidia.dump_ptxas_log = True  # printed to stdout: captured below
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            binary = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                    target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as exc:  # noqa: BLE001 - any compile failure is a result to report, not a crash
        message = " ".join(str(exc).split())
        return Compiled(False, seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {message[:400]}")
    usage = resource_usage(binary.asm["cubin"], binary.metadata.name)
    return Compiled(True, registers=usage["REG"], spills=spill_bytes(log.getvalue()),
                    shared_bytes=binary.metadata.shared + usage["SHARED"],
                    stack_bytes=usage["STACK"] + usage["LOCAL"], seconds=time.perf_counter() - start)


def compile_variant(variant) -> Compiled:
    """Worker entry point: a `launches.Variant` (plain data) -> its measurements."""
    kernel = getattr(importlib.import_module(variant.module), variant.qualname)
    return compile_kernel(kernel, variant.arch, variant.signature, variant.constexprs, variant.attrs,
                          variant.options)

