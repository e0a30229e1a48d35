"""The AOT report: one row per kernel, variant and target; the checks that fail a run; JSON and Markdown.

Pure Python (no triton, no torch), so tests can check the checker in any process.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

# Shared memory one block may use (the opt-in maximum per block), by compute capability.
SHARED_LIMITS = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}


@dataclass(frozen=True)
class SpillAllowance:
    max_bytes: int  # spill stores + loads; a larger spill is a new problem and fails
    reason: str


# The one table of accepted spills: (kernel pattern, variant pattern), fnmatch syntax -> allowance.
# A spill costs local-memory traffic on every use of the spilled values, so each entry says why it is
# cheap here, and caps the bytes so that a growing spill fails again. "Checked in the SASS" means
# `cuobjdump -sass` of the cubin shows where the STL/LDL instructions sit relative to the loops.
_PARKED = ("ptxas parks {what} in local memory before the main loop and reloads {when} (checked in the "
           "SASS: {where}); {cost}")
SPILL_JUSTIFICATIONS: dict[tuple[str, str], SpillAllowance] = {
    ("routed_ffn._down_scatter_kernel", "*16 BLOCK_M=64 BLOCK_N=64 BLOCK_K=32 *"): SpillAllowance(24, _PARKED.format(
        what="3 32-bit values (sm_80, at 96 registers)", when="them for the residual epilogue",
        where="no spill instruction inside the K loop", cost="3 stores + 3 loads per thread per 64x64 tile")),
    ("routed_ffn._gate_up*kernel", "fp32 * PRECISION=ieee *"): SpillAllowance(88, _PARKED.format(
        what="values live across the K loops (sm_80 FMA matmul of exact fp32, 255 registers)",
        when="them for the epilogue", where="all spill instructions outside the loops",
        cost="only precision=fp32 runs with TF32 off take this path; 8 warps would remove it here but add a "
             "spill to the down projection, so the shared matmul config stays until a GPU times both")),
    ("codebook_ce._codebook_ce_fwd_kernel", "fp32 *"): SpillAllowance(16, _PARKED.format(
        what="one or two row values (fp32 logits on sm_90)", when="them after the class loop",
        where="no spill instruction inside the loop", cost="a few bytes per thread per program of 4 rows")),
    ("routed_rmsnorm._routed_rmsnorm_bwd_kernel", "fp32*"): SpillAllowance(16, _PARKED.format(
        what="one per-row scalar (sm_90 demo width, sm_100 odd row counts)", when="it once per H block",
        where="one 4-byte load inside the loop", cost="next to the 8 x 256-element tiles of four tensors "
        "that each iteration loads, an L1 hit")),
}


@dataclass
class Row:
    kernel: str  # module.function inside higgs_ds.kernels
    variant: str  # the specialisation (see launches._describe)
    target: str  # sm_80, sm_90, sm_100
    compiled: bool
    registers: int | None  # per thread
    spills: int | None  # bytes: spill stores + spill loads
    shared_bytes: int | None  # per block: dynamic + static
    stack_bytes: int | None  # per thread: stack frame + local memory
    note: str  # the spill's justification, or why the variant failed to compile


FIELDS = {field.name: field.type for field in dataclasses.fields(Row)}
_TYPES = {"kernel": (str,), "variant": (str,), "target": (str,), "compiled": (bool,), "note": (str,)}


def target_name(arch: int) -> str:
    return f"sm_{arch}"


def arch_of(target: str) -> int:
    return int(target.removeprefix("sm_"))


def justification(kernel: str, variant: str, spills: int, table=SPILL_JUSTIFICATIONS) -> str:
    """The table's reason for `spills` bytes of spilling in this kernel variant, or "" when none covers it."""
    for (kernel_pattern, variant_pattern), allowance in table.items():
        if (fnmatch.fnmatchcase(kernel, kernel_pattern) and fnmatch.fnmatchcase(variant, variant_pattern)
                and spills <= allowance.max_bytes):
            return allowance.reason
    return ""


def make_row(kernel: str, variant: str, arch: int, result, table=SPILL_JUSTIFICATIONS) -> Row:
    """A row from a `cubin.Compiled`; the note is the compile error or the spill's justification."""
    note = result.error if not result.compiled else (
        justification(kernel, variant, result.spills, table) if result.spills else "")
    return Row(kernel, variant, target_name(arch), result.compiled, result.registers, result.spills,
               result.shared_bytes, result.stack_bytes, note)


def problems(rows: list[Row], table=SPILL_JUSTIFICATIONS, limits=SHARED_LIMITS) -> list[str]:
    """Everything that fails the run: compile errors, missing figures, shared memory over the target's
    limit, and spills without the table's justification in the row's note."""
    found = []
    for row in rows:
        where = f"{row.kernel} [{row.variant}] on {row.target}"
        if not row.compiled:
            found.append(f"{where}: did not compile: {row.note}")
            continue
        if not row.registers or row.registers <= 0:
            found.append(f"{where}: no register count ({row.registers})")
        if row.spills is None or row.shared_bytes is None or row.stack_bytes is None:
            found.append(f"{where}: missing spill, shared or stack figures")
            continue
        limit = limits.get(arch_of(row.target))
        if limit is None:
            found.append(f"{where}: no shared-memory limit known for {row.target}")
        elif row.shared_bytes > limit:
            found.append(f"{where}: {row.shared_bytes} bytes of shared memory, over the {limit}-byte limit")
        if row.spills > 0:
            reason = justification(row.kernel, row.variant, row.spills, table)
            if not reason:
                found.append(f"{where}: spills {row.spills} bytes and no justification covers it")
            elif row.note != reason:
                found.append(f"{where}: spills {row.spills} bytes; its note is not the table's justification")
    return found


def write_json(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=1) + "\n")


def read_json(path: Path) -> list[Row]:
    """Rows back from report.json, each checked against the schema (a clear error names row and field)."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of rows, got {type(data).__name__}")
    rows = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != set(FIELDS):
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(f"{path}: row {index} has fields {keys}, expected {sorted(FIELDS)}")
        for name, value in item.items():
            allowed = _TYPES.get(name, (int, type(None)))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ValueError(f"{path}: row {index} field {name}={value!r} is not {FIELDS[name]}")
        rows.append(Row(**item))
    return rows


def summary_by_target(rows: list[Row]) -> list[str]:
    """One line per target: variants compiled, register / shared / stack ranges, spills."""
    lines = []
    for target in sorted({row.target for row in rows}, key=arch_of):
        mine = [row for row in rows if row.target == target]
        ok = [row for row in mine if row.compiled]
        line = f"- **{target}**: {len(ok)} of {len(mine)} variants compiled"
        if ok:
            regs = [row.registers for row in ok]
            shared = [row.shared_bytes for row in ok]
            stack = [row.stack_bytes for row in ok]
            spilling = sum(1 for row in ok if row.spills)
            line += (f"; registers {min(regs)}-{max(regs)}, shared {min(shared)}-{max(shared)} bytes "
                     f"(limit {SHARED_LIMITS.get(arch_of(target), '?')}), stack {min(stack)}-{max(stack)} bytes, "
                     f"{spilling} spilling")
        lines.append(line)
    return lines


def write_markdown(path: Path, rows: list[Row], used_by: list[list[str]], found: list[str], header: str) -> None:
    """The table, the per-target counts and every problem; `used_by[i]` lists the launches of row i."""
    lines = ["# Ahead-of-time kernel compile report", "", header, "", *summary_by_target(rows), ""]
    lines += ["## Problems", ""] + ([f"- {problem}" for problem in found] or ["None."]) + [""]
    lines += ["## Variants", "", "| kernel | variant | target | compiled | registers | spills | shared | stack | "
              "launched by | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row, scenarios in zip(rows, used_by, strict=True):
        more = f" (+{len(scenarios) - 1} more)" if len(scenarios) > 1 else ""
        cells = [row.kernel, row.variant.replace("|", "/"), row.target, "yes" if row.compiled else "**no**",
                 row.registers, row.spills, row.shared_bytes, row.stack_bytes, scenarios[0] + more,
                 row.note.replace("|", "/")]
        lines.append("| " + " | ".join("" if cell is None else str(cell) for cell in cells) + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
