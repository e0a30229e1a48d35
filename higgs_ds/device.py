"""The one "auto" rule for devices and precision: the GPU when there is one, else the CPU; bf16 on a GPU,
fp32 on the CPU (where bf16 matmuls are slow and the tests compare fp32 results bit for bit)."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is taken as a torch device name."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_problem(name: str | torch.device) -> str | None:
    """Why `name` is no device this process can use, or None: "auto", "cpu", "cuda" with a GPU visible, or
    "cuda:i" with i a visible GPU. Checked when the flag is read, before anything loads."""
    if str(name) == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return "not a device name: give auto, cpu, cuda or cuda:<index>"
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"{device.type} devices are not supported: give auto, cpu, cuda or cuda:<index>"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "no GPU is visible to this process: use cpu, or check CUDA_VISIBLE_DEVICES and the driver"
    if device.index is not None and device.index >= count:
        return f"{count} GPU(s) are visible: name one of cuda:0 .. cuda:{count - 1}"
    return None


def resolve_precision(precision: str = "auto", device: str | torch.device = "auto") -> str:
    """"auto" -> "bf16" on a CUDA device, "fp32" elsewhere; "fp32" / "bf16" are kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {PRECISIONS}")
    if precision != "auto":
        return precision
    return "bf16" if resolve_device(device).type == "cuda" else "fp32"


def torch_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
