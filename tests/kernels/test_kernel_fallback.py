"""First use of the fused kernels under `ops_backend=auto`: a kernel that fails to compile or computes
wrong numbers (forward or backward) is replaced by the PyTorch path with one warning, the choice is
recorded, and the losses are the torch backend's. `triton` raises instead; `torch` never touches Triton.

On the CPU the self-check path is forced by letting "auto" treat the CPU like CUDA (the real kernels then
run in the Triton interpreter); injected kernels stand in for a broken GPU."""

import logging

import pytest
import torch
from higgs_ds.kernels import codebook_ce, fused_head_ce, routed_ffn

from higgs_ds import ops
from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.models.loss import LossWeights, combine
from higgs_ds.ops import reference, selfcheck
from higgs_ds.train.metrics import MetricsWriter, read_metrics
from tests.kernels.tolerance import DEVICE
from tests.model_utils import random_batch

# the fused ops a training step calls (codebook_cross_entropy, on materialised logits, is tested alone)
MODEL_OPS = ("routed_ffn", "linear_cross_entropy", "codebook_linear_cross_entropy")


@pytest.fixture
def backend(monkeypatch):
    """Select a backend for one test, with "auto" trying the kernels on the CPU."""
    previous = ops.get_backend()
    monkeypatch.setattr(ops, "AUTO_DEVICE_TYPES", ("cuda", "cpu"))
    yield ops.set_backend
    ops.set_backend(previous)


def _broken(op: str, how: str, calls: list):
    """A stand-in for `op`'s Triton entry point: it raises, or returns the reference's numbers off by 50%
    in the forward ("forward") or only in the backward ("backward")."""
    right = getattr(reference, op) if op != "routed_ffn" else None

    def kernel(*args):
        calls.append(op)
        if how == "raises":
            raise RuntimeError("PTXASError: ptxas fatal: Value 'sm_120' is not defined for option 'gpu-name'")
        if op == "routed_ffn":  # the kernel's own signature; the reference on its arguments
            x, mask, nt, na, et, ea, wgt, wut, wdt, wga, wua, wda = args
            norm = lambda w, e, h: w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + e))  # noqa: E731
            mlp = lambda h, g, u, d: (torch.nn.functional.silu(h @ g.T) * (h @ u.T)) @ d.T  # noqa: E731
            out = torch.where(mask[:, None], x + mlp(norm(na, ea, x), wga, wua, wda), x + mlp(norm(nt, et, x), wgt,
                                                                                              wut, wdt))
            outputs = (out,)
        else:
            outputs = right(*args)
        first = _Scaled.apply(outputs[0], 1.5 if how == "forward" else 1.0, 2.0 if how == "backward" else 1.0)
        return first if op == "routed_ffn" else (first, *outputs[1:])

    return kernel


class _Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, forward_scale, backward_scale):
        ctx.backward_scale = backward_scale
        return x * forward_scale

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.backward_scale, None, None


MODULES = {"routed_ffn": routed_ffn, "linear_cross_entropy": fused_head_ce,
           "codebook_linear_cross_entropy": fused_head_ce, "codebook_cross_entropy": codebook_ce}


def _inject(monkeypatch, op: str, kernel) -> None:
    monkeypatch.setattr(MODULES[op], ops.KERNELS[op][1], kernel)


def _model_step(seed: int = 0):
    """Loss and gradients of one training step of a tiny model: every fused op runs in it."""
    torch.manual_seed(seed)
    cfg = tiny_config()
    model = HiggsAudioModel(cfg).to(DEVICE)
    batch = random_batch(cfg, [[(2, 9, "out")], [(1, 5, "in"), (8, 7, "out")]], seq_len=20, seed=seed)
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    out = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                audio_labels=batch["audio_labels"])
    loss = combine(out.loss_sums, LossWeights()).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same(got: torch.Tensor, want: torch.Tensor, what: str = "loss") -> None:
    """Bit for bit on the CPU; on CUDA within rounding (some backward kernels accumulate with atomics)."""
    if got.device.type == "cpu":
        assert torch.equal(got, want), what
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=what)


def _fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "first-use check" in r.message]


@pytest.mark.parametrize("how", ["raises", "forward", "backward"])
def test_a_broken_kernel_falls_back_once_and_the_losses_are_the_torch_backends(backend, monkeypatch, caplog, how):
    backend("torch")
    want_loss, want_grads = _model_step()

    calls = []
    for op in MODEL_OPS:
        _inject(monkeypatch, op, _broken(op, how, calls))
    backend("auto")
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        got_loss, got_grads = _model_step()
        _model_step(seed=1)  # later steps take the PyTorch path without asking again

    _assert_same(got_loss, want_loss)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        _assert_same(got_grads[name], grad, name)
    assert sorted(calls) == sorted(MODEL_OPS)  # each kernel ran once: its self-check, never in the model
    warnings = _fallback_warnings(caplog)
    assert len(warnings) == len(MODEL_OPS)  # one per op (and dtype)
    for op in MODEL_OPS:
        (line,) = [w for w in warnings if w.startswith(f"fused kernel {op} (float32)")]
        assert ("PTXASError" if how == "raises" else "differs from the PyTorch reference") in line
        assert ("output 0" if how == "forward" else "gradient" if how == "backward" else "ptxas") in line
    choices = ops.kernel_choices()
    assert set(choices) == {f"{op}/float32" for op in MODEL_OPS}
    assert all(c.startswith("torch (self-check failed: ") for c in choices.values())


def test_a_kernel_that_passes_its_check_is_used(backend, monkeypatch, caplog):
    """The real kernels (in the interpreter) pass their self-check and then serve every call."""
    backend("auto")
    calls = []
    original = ops.triton_kernel
    monkeypatch.setattr(ops, "triton_kernel", lambda op: calls.append(op) or original(op))
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        loss, _ = _model_step()
    assert not _fallback_warnings(caplog)
    assert ops.kernel_choices() == {f"{op}/float32": "triton" for op in MODEL_OPS}
    backend("torch")
    torch.testing.assert_close(loss, _model_step()[0], rtol=1e-4, atol=1e-4)
    assert calls.count("linear_cross_entropy") == 2  # the self-check, then the model's call


@pytest.mark.parametrize("how", ["raises", "backward"])
def test_codebook_cross_entropy_falls_back_too(backend, monkeypatch, caplog, how):
    logits = torch.randn(6, 3, 20, device=DEVICE, requires_grad=True)
    targets = torch.randint(0, 20, (6, 3), device=DEVICE)
    want = reference.codebook_cross_entropy(logits, targets)
    (want_grad,) = torch.autograd.grad(want[0].sum(), logits)
    _inject(monkeypatch, "codebook_cross_entropy", _broken("codebook_cross_entropy", how, []))
    backend("auto")
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        for _ in range(2):
            got = ops.codebook_cross_entropy(logits, targets)
            (got_grad,) = torch.autograd.grad(got[0].sum(), logits)
            for g, w in zip((*got, got_grad), (*want, want_grad), strict=True):
                _assert_same(g, w)
    assert len(_fallback_warnings(caplog)) == 1
    assert ops.kernel_choices()["codebook_cross_entropy/float32"].startswith("torch (self-check failed")


def test_a_call_off_the_fast_device_does_not_skip_the_check(backend, monkeypatch):
    """A CPU call first (e.g. a CPU-side helper in a GPU run) must not stand in for the check on the device."""
    calls = []
    _inject(monkeypatch, "linear_cross_entropy", _broken("linear_cross_entropy", "forward", calls))
    backend("auto")
    monkeypatch.setattr(ops, "AUTO_DEVICE_TYPES", ("cuda",))
    hidden, weight, targets = torch.randn(4, 8), torch.randn(10, 8), torch.tensor([1, 2, -100, 3])
    ops.linear_cross_entropy(hidden, weight, targets)
    assert ops.kernel_choices() == {"linear_cross_entropy/float32": "torch"} and not calls
    monkeypatch.setattr(ops, "AUTO_DEVICE_TYPES", ("cuda", "cpu"))  # now the "device" call
    ops.linear_cross_entropy(hidden, weight, targets)
    assert calls == ["linear_cross_entropy"]
    assert ops.kernel_choices()["linear_cross_entropy/float32"].startswith("torch (self-check failed: output 0")


def test_triton_raises_instead_of_falling_back(backend, monkeypatch):
    calls = []
    _inject(monkeypatch, "linear_cross_entropy", _broken("linear_cross_entropy", "raises", calls))
    backend("triton")
    with pytest.raises(RuntimeError, match="ptxas fatal"):
        ops.linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.tensor([1, 2, -100, 3]))
    assert calls == ["linear_cross_entropy"]


def test_torch_never_calls_triton(backend, monkeypatch):
    def explode(op):
        raise AssertionError(f"ops_backend=torch looked up the Triton kernel of {op}")

    monkeypatch.setattr(ops, "triton_kernel", explode)
    for op in ops.KERNELS:
        _inject(monkeypatch, op, explode)
    backend("torch")
    _model_step()
    ops.codebook_cross_entropy(torch.randn(3, 2, 20), torch.zeros(3, 2, dtype=torch.long))
    assert ops.kernel_choices() == {f"{op}/float32": "torch" for op in ops.KERNELS}  # every op on record


def test_the_check_compares_within_the_dtypes_tolerance():
    right = reference.linear_cross_entropy
    slightly_off = lambda h, w, t: (right(h, w, t)[0] * (1 + 1e-3), *right(h, w, t)[1:])  # noqa: E731
    assert selfcheck.check("linear_cross_entropy", slightly_off, right, torch.bfloat16, torch.device("cpu")) is None
    error = selfcheck.check("linear_cross_entropy", slightly_off, right, torch.float32, torch.device("cpu"))
    assert error is None  # 1e-3 is within fp32's 5e-3 as well
    off = lambda h, w, t: (right(h, w, t)[0] * 1.01, *right(h, w, t)[1:])  # noqa: E731
    assert "output 0" in selfcheck.check("linear_cross_entropy", off, right, torch.float32, torch.device("cpu"))
    assert selfcheck.check("linear_cross_entropy", off, right, torch.bfloat16, torch.device("cpu")) is None


def test_the_check_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    right = reference.codebook_cross_entropy
    assert selfcheck.check("codebook_cross_entropy", right, right, torch.float32, torch.device("cpu")) is None
    assert torch.equal(torch.get_rng_state(), state)


def test_the_choice_is_recorded_in_the_metrics(tmp_path):
    choices = {"routed_ffn/bfloat16": "torch (self-check failed: RuntimeError: ptxas fatal)",
               "linear_cross_entropy/bfloat16": "triton"}
    writer = MetricsWriter(tmp_path, {}, wandb_project=None, enabled=True)
    writer.write_kernels(3, choices)
    assert read_metrics(tmp_path / "metrics.jsonl", "kernels") == [{"step": 3, "kind": "kernels", **choices}]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", list(ops.KERNELS))
def test_the_compiled_kernels_pass_their_own_check(op, dtype):
    """No false alarm: on a GPU the real kernels pass the check that would replace them."""
    assert selfcheck.check(op, ops._TRITON_PATHS[op], getattr(reference, op), dtype, torch.device("cuda")) is None
