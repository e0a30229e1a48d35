"""Every kernel launch the dispatcher can make on a GPU, taken from the real launch wrappers.

The wrappers in `higgs_ds.kernels` choose block sizes, flags and grids. Here they run on meta tensors
at the shapes that matter (the demo's and the released model's) while `JITFunction.run` is replaced by
a recorder, so the variant list comes from the code a GPU run executes, not from a copy of its rules.
Each recorded launch is then specialised as the JIT would on that GPU: Triton's own binder for the
target, with each pointer modelled by its byte offset into a fresh allocation (CUDA allocations are
at least 256-byte aligned), so a chunk view at an odd offset gets the unaligned variant it gets there.

Import this module only in a process where TRITON_INTERPRET is unset: the kernels and
`higgs_ds.kernels.runtime` read it at import time and would pick the interpreter's block sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import yaml
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import JITFunction, MockTensor, create_function_from_signature

REPO = Path(__file__).resolve().parents[2]
KERNEL_PACKAGE = "higgs_ds.kernels"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    vocab: int
    codebooks: int
    codebook_rows: int  # classes per codebook: codes + stream BOS/EOS
    tokens: int  # per micro-batch: the recipe's data.stream.max_tokens


def model_shapes() -> list[ModelShape]:
    """The demo recipe's model and the released model of the default family (the demo's), each at its recipe's
    token budget (the released model's: the recipe that fine-tunes it)."""
    from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER
    from higgs_ds.data.demo import DemoConfig
    from higgs_ds.models import DEFAULT_FAMILY, get_family

    demo = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    recipes = [yaml.safe_load(path.read_text()) for path in sorted((REPO / "recipes").glob("*.yaml"))]
    released = next(r for r in recipes if r.get("model", {}).get("init")
                    and r["model"].get("arch", DEFAULT_FAMILY) == DEFAULT_FAMILY)
    release = get_family(DEFAULT_FAMILY).released_config()
    codec = json.loads((REPO / "higgs_ds" / "data" / "demo" / "codec" / "dac_demo.json").read_text())["config"]["model"]
    demo_codes = dataclasses.replace(HIGGS_AUDIO_TOKENIZER, codec="dac", num_codebooks=codec["n_codebooks"],
                                     codebook_size=codec["codebook_size"], stream_bos=-1, stream_eos=-1)
    return [
        ModelShape("demo", demo["model"]["hidden_size"], demo["model"]["intermediate_size"],
                   DemoConfig().vocab_size, demo_codes.num_codebooks, demo_codes.codebook_rows,
                   demo["data"]["stream"]["max_tokens"]),
        ModelShape("released", release.hidden_size, release.text_config.intermediate_size, release.vocab_size,
                   release.audio_num_codebooks, release.codebook_rows, released["data"]["stream"]["max_tokens"]),
    ]


@dataclass
class Launch:
    kernel: JITFunction
    args: tuple
    kwargs: dict
    scenario: str


@contextlib.contextmanager
def _recording(scenario: str, into: list[Launch]) -> Iterator[None]:
    def record(kernel, *args, grid, warmup, **kwargs):
        into.append(Launch(kernel, args, kwargs, scenario))

    with mock.patch.object(JITFunction, "run", record):
        yield


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """torch's TF32 matmul flag, which `runtime.dot_precision` turns into the kernels' PRECISION."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def _routed_ffn(shape: ModelShape, dtype: torch.dtype, n_tokens: int, backward: bool) -> None:
    """A DualFFN layer's MLP half through `ops.routed_ffn`, as the model calls it."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    from higgs_ds import ops

    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, hidden_act="silu")
    with torch.device("meta"):
        norms = [LlamaRMSNorm(shape.hidden).to(dtype) for _ in range(2)]
        mlps = [LlamaMLP(config).to(dtype) for _ in range(2)]
    hidden = _meta(n_tokens, shape.hidden, dtype=dtype).requires_grad_(backward)
    audio_mask = _meta(n_tokens, dtype=torch.bool)
    with torch.set_grad_enabled(backward):
        out = ops.routed_ffn(hidden, audio_mask, norms[0], mlps[0], norms[1], mlps[1])
    if backward:
        out.sum().backward()


def _fused_head(dtype: torch.dtype, n_rows: int, n_books: int, n_classes: int, weighted: bool) -> None:
    """The Triton chunk ops of the fused head + CE, on the chunks `chunked_ce` cuts on a GPU.

    The head's own entry point selects labelled rows with a data-dependent `nonzero`, which meta tensors
    cannot run; the kernels only see its chunks, so those are replayed: first, second and last chunk.
    """
    from higgs_ds.kernels.chunked_ce import rows_per_chunk
    from higgs_ds.kernels.fused_head_ce import TRITON_CHUNK_OPS

    step = rows_per_chunk(n_rows, n_books * n_classes, torch.device("cuda"))
    targets = _meta(n_rows, n_books, dtype=torch.int64)
    lse = _meta(n_rows, n_books)
    weights = _meta(n_books) if weighted else None
    scale = _meta(n_books)
    last = (n_rows - 1) // step * step
    for start in sorted({0, min(step, last), last}):
        chunk = slice(start, start + step)
        rows = min(step, n_rows - start)
        logits = _meta(rows, n_books * n_classes, dtype=dtype).view(rows, n_books, n_classes)
        TRITON_CHUNK_OPS.stats(logits, targets[chunk], weights)
        TRITON_CHUNK_OPS.grad_(logits, targets[chunk], lse[chunk], scale)


def _codebook_ce(dtype: torch.dtype, n_rows: int, n_books: int, n_classes: int, weighted: bool) -> None:
    """CE on materialised logits through `ops.codebook_cross_entropy` (the gradient is written forward)."""
    from higgs_ds import ops

    logits = _meta(n_rows, n_books, n_classes, dtype=dtype).requires_grad_(True)
    targets = _meta(n_rows, n_books, dtype=torch.int64)
    ops.codebook_cross_entropy(logits, targets, _meta(n_books) if weighted else None)


def capture_launches(shapes: list[ModelShape] | None = None) -> list[Launch]:
    """Run every dispatcher entry point at every shape, dtype, flag and row-count class; record launches.

    Row counts: the recipe's token budget (a multiple of 16) and one less (not a multiple: the JIT
    specialises integer arguments on divisibility by 16), plus one token for the routed FFN (a decode
    step of generation, where the JIT specialises the value 1).
    """
    from higgs_ds import ops

    launches: list[Launch] = []
    previous = ops.get_backend()
    ops.set_backend("triton")  # meta tensors are not on CUDA: force the dispatcher's GPU path
    try:
        for shape in shapes or model_shapes():
            for dtype_name, dtype in DTYPES.items():
                for tf32 in (False, True):
                    tag = f"{shape.name} {dtype_name}{' tf32' if tf32 else ''}"
                    with _tf32(tf32):
                        _capture_shape(shape, dtype, tag, launches)
    finally:
        ops.set_backend(previous)
    return launches


def _capture_shape(shape: ModelShape, dtype: torch.dtype, tag: str, launches: list[Launch]) -> None:
    for n_tokens in (shape.tokens, shape.tokens - 1):
        with _recording(f"{tag} routed FFN fwd+bwd, {n_tokens} tokens", launches):
            _routed_ffn(shape, dtype, n_tokens, backward=True)
        with _recording(f"{tag} text head, {n_tokens} rows", launches):
            _fused_head(dtype, n_tokens, 1, shape.vocab, weighted=False)
        for weighted in (False, True):
            weights = " weighted" if weighted else ""
            with _recording(f"{tag} audio head{weights}, {n_tokens} rows", launches):
                _fused_head(dtype, n_tokens, shape.codebooks, shape.codebook_rows, weighted)
            with _recording(f"{tag} codebook CE{weights}, {n_tokens} rows", launches):
                _codebook_ce(dtype, n_tokens, shape.codebooks, shape.codebook_rows, weighted)
    with _recording(f"{tag} routed FFN decode, 1 token", launches):
        _routed_ffn(shape, dtype, 1, backward=False)


class _Pointer(MockTensor):
    """A tensor argument as the binder sees it: element type and address (offset into its allocation)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__(tensor.dtype, list(tensor.shape))
        self.offset = tensor.storage_offset() * tensor.element_size()

    def data_ptr(self) -> int:
        return self.offset


def _as_bound(value):
    return _Pointer(value) if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class Variant:
    """One compiled binary: a kernel specialised for a target, in plain data a worker process can take."""

    module: str
    qualname: str
    name: str  # readable description of the specialisation, the same for every target
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict

    @property
    def kernel(self) -> str:
        return f"{self.module.removeprefix(KERNEL_PACKAGE + '.')}.{self.qualname}"

    @property
    def key(self) -> tuple:
        return (self.kernel, self.name, self.arch)


def specialize(launch: Launch, arch: int) -> Variant:
    """What `JITFunction.run` would compile for this launch on a GPU of compute capability `arch`."""
    kernel = launch.kernel
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {name: _as_bound(value) for name, value in launch.kwargs.items()}
    kwargs.setdefault("debug", kernel.debug)
    bound, specialization, _ = binder(*map(_as_bound, launch.args), **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, {})
    return Variant(kernel.fn.__module__, kernel.fn.__qualname__, _describe(kernel, signature, constexprs, attrs,
                   options), arch, signature, constexprs, attrs, dict(options.__dict__))


def _describe(kernel: JITFunction, signature: dict, constexprs: dict, attrs: dict, options) -> str:
    """e.g. `bf16+fp32 HAS_WEIGHTS=0 BLOCK_N=4 warps=4 stages=3 | =1: K | %16: N,C | unaligned: lse_ptr`:
    the float tensors' types, the constexpr arguments, the launch options, then the JIT's own
    specialisations (integers equal to 1, integers divisible by 16, pointers not 16-byte aligned)."""
    names = [param.name for param in kernel.params]
    declared = {param.name for param in kernel.params if param.is_constexpr}
    pointers = [name for name in names if signature[name].startswith("*")]
    floats = dict.fromkeys(signature[name][1:] for name in pointers if signature[name][1] in "fb")
    dtype = "+".join(floats) or "-"
    flags = [f"{names[path[0]]}={_short(value)}" for path, value in constexprs.items()
             if names[path[0]] in declared]
    ones = [names[path[0]] for path in constexprs if names[path[0]] not in declared]
    divisible = [name for name in names if signature[name] in ("i32", "i64")
                 and ["tt.divisibility", 16] in attrs.get((names.index(name),), [])]
    unaligned = [name for name in pointers if ["tt.divisibility", 16] not in attrs.get((names.index(name),), [])]
    parts = [" ".join([dtype, *flags, f"warps={options.num_warps}", f"stages={options.num_stages}"])]
    for label, items in (("=1", ones), ("%16", divisible), ("unaligned", unaligned)):
        if items:
            parts.append(f"{label}: {','.join(items)}")
    return " | ".join(parts)


def _short(value) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def entry_kernels() -> dict[str, JITFunction]:
    """Every `@triton.jit` function of the kernel package that no other kernel calls: the launchable ones."""
    import importlib
    import pkgutil
    import re

    package = importlib.import_module(KERNEL_PACKAGE)
    found: dict[str, JITFunction] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{KERNEL_PACKAGE}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, JITFunction) and value.fn.__module__ == module.__name__:
                found[f"{info.name}.{value.fn.__qualname__}"] = value
    sources = "\n".join(kernel.src for kernel in found.values())
    return {name: kernel for name, kernel in found.items()
            if not re.search(rf"\b{kernel.fn.__name__}\s*\(", sources.replace(kernel.src, ""))}


def require_compiling_process() -> None:
    """Fail early where the kernels would be built for the interpreter instead of a GPU."""
    from higgs_ds.kernels import runtime

    if runtime.INTERPRET or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("TRITON_INTERPRET is set: the kernels would use the interpreter's block sizes. "
                           "Run the ahead-of-time compile in a process without it.")


@dataclass
class Planned:
    variant: Variant
    scenarios: list[str]


def plan(launches: list[Launch], arches: list[int]) -> list[Planned]:
    """The distinct binaries per target, in launch order, each with the scenarios that launch it."""
    planned: dict[tuple, Planned] = {}
    specs: dict[tuple, str] = {}
    for arch in arches:
        for launch in launches:
            variant = specialize(launch, arch)
            spec = repr((variant.signature, variant.constexprs, variant.attrs, variant.options))
            if specs.setdefault(variant.key, spec) != spec:
                raise RuntimeError(f"two specialisations of {variant.kernel} share the name {variant.name!r}")
            planned.setdefault(variant.key, Planned(variant, [])).scenarios.append(launch.scenario)
    return list(planned.values())
