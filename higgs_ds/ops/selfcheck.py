"""The first-use check of a fused kernel: a small random case of the op, run through the Triton path and
the PyTorch reference on the same device and dtype, forward and backward, compared within a tolerance.

A GPU the kernels were never run on (a new architecture, a Triton or driver upgrade) can fail to compile
them or compute wrong numbers; with `ops_backend=auto` the dispatcher runs this once per op and dtype and
keeps the PyTorch path when it fails. The case is drawn from its own generator: the run's RNG streams
(and so its losses) are the same whether or not a check ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from higgs_ds.constants import IGNORE_INDEX

# Relative error (norm of the difference over norm of the reference) allowed per dtype. The kernels
# accumulate in fp32 like the references; what is left is rounding order (and TF32 when torch allows it).
TOLERANCE = {torch.float32: 5e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}
HIDDEN, INTERMEDIATE = 64, 96


class _RMSNorm(nn.Module):
    """Llama's RMSNorm (fp32 statistics, weight applied in the input dtype): the module the dispatcher reads."""

    def __init__(self, weight: torch.Tensor, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x32.to(x.dtype)


class _SwiGLU(nn.Module):
    """Llama's bias-free SiLU MLP."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = (nn.Linear(w.shape[1], w.shape[0], bias=False,
                                                                  device=w.device, dtype=w.dtype)
                                                        for w in (gate, up, down))
        for linear, w in zip((self.gate_proj, self.up_proj, self.down_proj), (gate, up, down), strict=True):
            linear.weight = nn.Parameter(w)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class Case:
    """One op's inputs: `args` for the call, `leaves` whose gradients are compared, `compared` the
    outputs checked (counts such as n_correct are left out: a tie may flip an argmax)."""

    args: tuple
    leaves: list[torch.Tensor]
    compared: tuple[int, ...]


def _randn(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def _targets(gen: torch.Generator, n_classes: int, *shape) -> torch.Tensor:
    targets = torch.randint(0, n_classes, shape, generator=gen)
    return targets.masked_fill(torch.rand(shape, generator=gen) < 0.25, IGNORE_INDEX)


def _routed_ffn_case(gen, dtype, device) -> Case:
    hidden = _randn(gen, 2, 13, HIDDEN)
    mask = torch.rand(2, 13, generator=gen) < 0.5
    mask[0, 0], mask[0, 1] = True, False  # both routes taken
    raw = [1 + _randn(gen, HIDDEN, scale=0.1), _randn(gen, INTERMEDIATE, HIDDEN, scale=HIDDEN ** -0.5),
           _randn(gen, INTERMEDIATE, HIDDEN, scale=HIDDEN ** -0.5), _randn(gen, HIDDEN, INTERMEDIATE,
                                                                           scale=INTERMEDIATE ** -0.5)]
    text = [w.to(device, dtype) for w in raw]
    audio = [(w.flip(0) if w.dim() == 1 else w.flip(1)).to(device, dtype) for w in raw]  # another set
    modules = [_RMSNorm(text[0]), _SwiGLU(*text[1:]), _RMSNorm(audio[0]), _SwiGLU(*audio[1:])]
    x = hidden.to(device, dtype).requires_grad_(True)
    params = [p for m in modules for p in m.parameters()]
    return Case((x, mask.to(device), *modules), [x, *params], (0,))


def _linear_ce_case(gen, dtype, device) -> Case:
    hidden = _randn(gen, 40, HIDDEN).to(device, dtype).requires_grad_(True)
    weight = _randn(gen, 300, HIDDEN, scale=HIDDEN ** -0.5).to(device, dtype).requires_grad_(True)
    return Case((hidden, weight, _targets(gen, 300, 40).to(device)), [hidden, weight], (0, 1))


def _codebook_linear_ce_case(gen, dtype, device) -> Case:
    books, classes = 4, 50
    hidden = _randn(gen, 24, HIDDEN).to(device, dtype).requires_grad_(True)
    weight = _randn(gen, books * classes, HIDDEN, scale=HIDDEN ** -0.5).to(device, dtype).requires_grad_(True)
    codebook_weights = (0.5 + torch.rand(books, generator=gen)).to(device)
    return Case((hidden, weight, _targets(gen, classes, 24, books).to(device), codebook_weights),
                [hidden, weight], (0, 1))


def _codebook_ce_case(gen, dtype, device) -> Case:
    books, classes = 4, 50
    logits = _randn(gen, 24, books, classes, scale=2.0).to(device, dtype).requires_grad_(True)
    codebook_weights = (0.5 + torch.rand(books, generator=gen)).to(device)
    return Case((logits, _targets(gen, classes, 24, books).to(device), codebook_weights), [logits], (0, 1))


CASES: dict[str, Callable[[torch.Generator, torch.dtype, torch.device], Case]] = {
    "routed_ffn": _routed_ffn_case,
    "linear_cross_entropy": _linear_ce_case,
    "codebook_linear_cross_entropy": _codebook_linear_ce_case,
    "codebook_cross_entropy": _codebook_ce_case,
}


def _run(fn: Callable, case: Case) -> list[torch.Tensor]:
    """The compared outputs, then the gradients of a fixed random projection of the first output."""
    with torch.enable_grad():
        outputs = fn(*case.args)
        outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
        gen = torch.Generator().manual_seed(1)
        projection = torch.randn(outputs[0].shape, generator=gen).to(outputs[0].device)
        grads = torch.autograd.grad((outputs[0].float() * projection).sum(), case.leaves, allow_unused=True)
    return [outputs[i].detach() for i in case.compared] + [g if g is not None else torch.zeros_like(leaf)
                                                           for g, leaf in zip(grads, case.leaves, strict=True)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).norm() / want.norm().clamp(min=1e-12))


def check(op: str, fused: Callable, reference: Callable, dtype: torch.dtype, device: torch.device) -> str | None:
    """None when `fused` agrees with `reference` on a small random case of `op`; else what went wrong."""
    make = CASES[op]
    try:
        got = _run(fused, make(torch.Generator().manual_seed(0), dtype, device))
    except Exception as exc:  # noqa: BLE001 - a compile error, a launch failure: any of them means "not here"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    case = make(torch.Generator().manual_seed(0), dtype, device)
    want = _run(reference, case)
    names = [f"output {i}" for i in case.compared] + [f"gradient {i}" for i in range(len(case.leaves))]
    tol = TOLERANCE.get(dtype, 5e-2)
    for name, g, w in zip(names, got, want, strict=True):
        err = relative_error(g, w)
        if not err <= tol:  # also catches NaN
            return f"{name} differs from the PyTorch reference by {err:.3g} (relative; tolerance {tol:g})"
    return None
