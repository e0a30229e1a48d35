"""The one dispatch point for the fused ops: Triton kernels on CUDA, PyTorch references elsewhere.

`set_backend(...)` selects the implementation:
- "auto": on CUDA, the first call of each op per dtype runs a small random case through the kernel and
  the reference (`selfcheck`); a kernel that fails to compile or disagrees is replaced by the reference
  for the rest of the process, with one warning. Elsewhere, the references.
- "triton": always the kernels, no check; an error raises (under TRITON_INTERPRET=1 they run on the CPU).
- "torch": always the references; Triton is never imported.
`kernel_choices()` says what each (op, dtype) used, for the run's records. The model and the training
loop call only the op functions below.
"""

from __future__ import annotations

import importlib
import logging
import typing
from typing import Literal

import torch
from torch import nn

from higgs_ds.ops import reference, selfcheck

log = logging.getLogger(__name__)

OpsBackend = Literal["auto", "torch", "triton"]
_BACKENDS = typing.get_args(OpsBackend)
# Where "auto" tries the kernels. A test adds "cpu" to run the self-check with the Triton interpreter.
AUTO_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
# op -> (module, function) of its Triton entry point, looked up at call time (imports triton)
KERNELS = {
    "routed_ffn": ("higgs_ds.kernels.routed_ffn", "routed_swiglu_ffn"),
    "linear_cross_entropy": ("higgs_ds.kernels.fused_head_ce", "linear_cross_entropy"),
    "codebook_linear_cross_entropy": ("higgs_ds.kernels.fused_head_ce", "codebook_linear_cross_entropy"),
    "codebook_cross_entropy": ("higgs_ds.kernels.codebook_ce", "codebook_cross_entropy"),
}

_backend: OpsBackend = "auto"
_choices: dict[str, str] = {}  # "op/dtype" -> "triton" | "torch" | "torch (self-check failed: ...)"
_check_errors: dict[str, str | None] = {}  # "op/dtype" -> the self-check's verdict (None: passed)


def set_backend(name: OpsBackend) -> None:
    """Select the backend; forgets earlier self-check verdicts."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; choose one of {_BACKENDS}")
    _backend = name
    _choices.clear()
    _check_errors.clear()


def get_backend() -> OpsBackend:
    return _backend


def kernel_choices() -> dict[str, str]:
    """What each op used so far, per dtype: "triton", "torch", or "torch (self-check failed: <why>)"."""
    return dict(_choices)


def uses_triton(device: torch.device | str) -> bool:
    """Whether ops on tensors of `device` may take the Triton path (the caller may then need ZeRO-3 to
    gather weights the kernels read directly; see `higgs_ds.train.parallelize`). Under "auto" a kernel
    that fails its self-check still falls back to the reference."""
    if _backend == "torch":
        return False
    return _backend == "triton" or torch.device(device).type in AUTO_DEVICE_TYPES


def triton_kernel(op: str):
    """The Triton entry point of `op`."""
    module, name = KERNELS[op]
    return getattr(importlib.import_module(module), name)


def _use_kernel(op: str, x: torch.Tensor) -> bool:
    """Whether `op` on `x` runs its kernel; under "auto" the first call per dtype runs the self-check."""
    key = f"{op}/{str(x.dtype).removeprefix('torch.')}"
    if not uses_triton(x.device):
        _choices.setdefault(key, "torch")
        return False
    if _backend == "triton":
        _choices.setdefault(key, "triton")
        return True
    if key not in _check_errors:
        error = _check_errors[key] = selfcheck.check(op, _TRITON_PATHS[op], getattr(reference, op), x.dtype,
                                                     x.device)
        _choices[key] = "triton" if error is None else f"torch (self-check failed: {error})"
        if error is not None:
            log.warning("fused kernel %s (%s) failed its first-use check, using the PyTorch path for the rest of "
                        "the run: %s", op, key.split("/")[1], error)
    return _check_errors[key] is None


def _kernel_readable(mlp: nn.Module) -> bool:
    """A bias-free SiLU LlamaMLP of plain nn.Linear layers. Only a plain nn.Linear is fully described by its
    weight: a wrapped linear (e.g. a LoRA adapter) must be called as a module, so it takes the reference."""
    act = type(getattr(mlp, "act_fn", None))
    return (issubclass(act, nn.SiLU) or act.__name__ == "SiLUActivation") and all(
        type(lin) is nn.Linear and lin.bias is None for lin in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))


def _fused_mlp_weights(norm: nn.Module, mlp: nn.Module, dtype: torch.dtype):
    """(norm weight, eps, gate, up, down) of a LlamaRMSNorm + a kernel-readable MLP."""
    linears = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return (norm.weight.to(dtype), norm.variance_epsilon, *(lin.weight.to(dtype) for lin in linears))


def _routed_ffn_kernel(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp):
    text = _fused_mlp_weights(text_norm, text_mlp, hidden.dtype)
    audio = _fused_mlp_weights(audio_norm, audio_mlp, hidden.dtype)
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = triton_kernel("routed_ffn")(flat, audio_mask.reshape(-1), text[0], audio[0], text[1], audio[1],
                                      *text[2:], *audio[2:])
    return out.view_as(hidden)


def _kernel_call(op: str):
    return lambda *args: triton_kernel(op)(*args)


# op -> the Triton path with the reference's signature (what the self-check compares)
_TRITON_PATHS = {"routed_ffn": _routed_ffn_kernel, **{op: _kernel_call(op) for op in KERNELS if op != "routed_ffn"}}


def routed_ffn(hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp):
    """`hidden + mlp_e(norm_e(hidden))` with e = text or audio per token; see `reference.routed_ffn`.

    The Triton path reads the modules' weights directly; under ZeRO-3 `higgs_ds.train.parallelize` marks
    the decoder layer as a leaf module so that all its parameters are gathered on entry. An MLP the kernel
    cannot read (e.g. LoRA-wrapped linears) takes the reference path.
    """
    args = (hidden, audio_mask, text_norm, text_mlp, audio_norm, audio_mlp)
    if _kernel_readable(text_mlp) and _kernel_readable(audio_mlp) and _use_kernel("routed_ffn", hidden):
        return _routed_ffn_kernel(*args)
    return reference.routed_ffn(*args)


def linear_cross_entropy(hidden, weight, targets):
    """Fused text head + CE: fp32 0-dim (loss_sum, n_valid, n_correct); see `reference.linear_cross_entropy`."""
    if _use_kernel("linear_cross_entropy", hidden):
        return triton_kernel("linear_cross_entropy")(hidden, weight, targets)
    return reference.linear_cross_entropy(hidden, weight, targets)


def codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights=None):
    """Fused audio head + per-codebook CE: fp32 [K] (loss_sum, n_valid, n_correct)."""
    if _use_kernel("codebook_linear_cross_entropy", hidden):
        return triton_kernel("codebook_linear_cross_entropy")(hidden, weight, targets, codebook_weights)
    return reference.codebook_linear_cross_entropy(hidden, weight, targets, codebook_weights)


def codebook_cross_entropy(logits, targets, codebook_weights=None):
    """Per-codebook CE on materialised logits [N, K, C]: fp32 [K] (loss_sum, n_valid, n_correct)."""
    if _use_kernel("codebook_cross_entropy", logits):
        return triton_kernel("codebook_cross_entropy")(logits, targets, codebook_weights)
    return reference.codebook_cross_entropy(logits, targets, codebook_weights)
