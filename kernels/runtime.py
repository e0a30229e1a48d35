"""Launch-time facts shared by the kernels: interpreter mode, dot precision and block sizes.

Every kernel runs the same code under `TRITON_INTERPRET=1` as on a GPU. The only differences are
constexpr flags chosen here: bf16 operands are upcast before `tl.dot` (the interpreter multiplies
bf16 bit patterns), and blocks are wider (the interpreter's cost is per program, not per element).
"""

from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

def dot_upcast(dtype: torch.dtype) -> bool:
    """Upcast `tl.dot` operands to fp32: needed for bf16 under the interpreter, never on a GPU."""
    return INTERPRET and dtype == torch.bfloat16


def dot_precision() -> str:
    """fp32 `tl.dot` precision matching torch's matmul setting (TF32 only if torch allows it)."""
    if not INTERPRET and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def matmul_blocks() -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) for the grouped GEMMs: one config, no autotune (see docs/kernels.md)."""
    return (64, 128, 64) if INTERPRET else (64, 64, 32)

