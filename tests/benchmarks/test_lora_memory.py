"""LoRA vs full fine-tuning: trainable parameters, training memory and step time, in one run.

Each mode builds the same seeded model, takes AdamW over its trainable parameters and runs a few
forward + backward + step iterations on one fixed batch. Peak memory is the process's peak resident
set above what was live before (`kernel_bench_utils.peak_memory_mib`: weights, gradients, Adam states
and activations). "state" is the exact size of weights + gradients + Adam moments after the steps.
The 5.8B Higgs Audio v2 shape is only counted (built on the meta device), not trained.
Runs only with `pytest --benchmark`.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.train.lora import LoraConfig, apply_lora
from tests.benchmarks.kernel_bench_utils import peak_memory_mib

pytestmark = pytest.mark.benchmark

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, head_dim=64)
VOCAB, BATCH, SEQ, AUDIO_SPAN, STEPS = 8192, 2, 256, 192, 4
# Llama-3.2-3B backbone with a DualFFN audio MLP in every layer
HIGGS_V2 = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                num_key_value_heads=8, head_dim=128)
MODES = {
    "full fine-tuning": None,
    "LoRA r16 attention+text_mlp+audio_mlp": LoraConfig(enabled=True, rank=16, alpha=32),
    "LoRA r16 + audio embeddings + audio head": LoraConfig(enabled=True, rank=16, alpha=32,
                                                           train_audio_embeddings=True, train_audio_head=True),
}


def _model(shape: dict, vocab: int, lora: LoraConfig | None) -> HiggsAudioModel:
    model = HiggsAudioModel(tiny_config(vocab_size=vocab, **shape))
    if lora is not None:
        apply_lora(model, lora)
    return model


def _batch(config):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB - 8, (BATCH, SEQ), generator=g)
    ids[:, SEQ - AUDIO_SPAN:] = config.audio_out_token_idx
    n_audio = BATCH * AUDIO_SPAN
    codes = torch.randint(0, 1024, (n_audio, config.audio_num_codebooks), generator=g)
    return {"input_ids": ids.to(DEVICE), "audio_ids": codes.to(DEVICE), "labels": ids.to(DEVICE),
            "audio_labels": codes.to(DEVICE)}


def _train_steps(lora: LoraConfig | None, result: dict) -> None:
    torch.manual_seed(0)
    model = _model(SHAPE, VOCAB, lora).to(DEVICE)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch, times = _batch(model.config), []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        sums = model(**batch).loss_sums
        (sums.text_sum + sums.audio_sum.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # grads stay allocated, as between real steps
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    tensors = [*model.parameters(), *(p.grad for p in trainable),
               *(s for st in optimizer.state.values() for s in st.values() if torch.is_tensor(s) and s.dim())]
    result.update(trainable=sum(p.numel() for p in trainable), total=sum(p.numel() for p in model.parameters()),
                  state_mib=sum(t.numel() * t.element_size() for t in tensors) / 2**20,
                  step_s=statistics.median(times[1:]))


def _render(rows: dict, title: str, columns: list[tuple[str, str]]) -> str:
    full = rows["full fine-tuning"]
    lines = [f"### {title}", "", "| mode | " + " | ".join(c for c, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for mode, r in rows.items():
        cells = [fmt(r, full) for _, fmt in columns]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _counted(lora: LoraConfig | None) -> dict:
    with torch.device("meta"):
        model = _model(HIGGS_V2, 128256, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total,
            "state_gib": (4 * total + 12 * trainable) / 2**30}  # fp32 weights, + grad and 2 Adam moments


def test_lora_vs_full_fine_tuning_memory(request):
    rows = {}
    for mode, lora in MODES.items():
        rows[mode] = {}
        rows[mode]["peak_mib"] = peak_memory_mib(lambda lora=lora, r=rows[mode]: _train_steps(lora, r), DEVICE)
    ratio = lambda key: lambda r, full: f"{r[key] / full[key]:.3f}"  # noqa: E731
    measured = _render(rows, f"LoRA vs full fine-tuning, {DEVICE}, {SHAPE}, vocab {VOCAB}, batch {BATCH}x{SEQ}", [
        ("trainable params", lambda r, _: f"{r['trainable'] / 1e6:.2f}M ({100 * r['trainable'] / r['total']:.1f}%)"),
        ("trainable / full", ratio("trainable")),
        ("weights+grads+Adam (MiB)", lambda r, _: f"{r['state_mib']:.0f}"), ("state / full", ratio("state_mib")),
        ("peak mem (MiB)", lambda r, _: f"{r['peak_mib']:.0f}"), ("peak / full", ratio("peak_mib")),
        ("step (s)", lambda r, _: f"{r['step_s']:.3f}"), ("time / full", ratio("step_s"))])
    counted = _render({mode: _counted(lora) for mode, lora in MODES.items()},
                      "Higgs Audio v2 5.8B shape, counted (fp32 weights + grads + Adam of the trainable part)", [
        ("trainable params", lambda r, _: f"{r['trainable'] / 1e6:.1f}M ({100 * r['trainable'] / r['total']:.2f}%)"),
        ("trainable / full", ratio("trainable")),
        ("state (GiB)", lambda r, _: f"{r['state_gib']:.1f}"), ("state / full", ratio("state_gib"))])
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    (reporter.write_line if reporter else print)("\n" + measured + "\n\n" + counted + "\n")
    full, lora = rows["full fine-tuning"], rows["LoRA r16 attention+text_mlp+audio_mlp"]
    assert lora["trainable"] < 0.1 * full["trainable"] and lora["state_mib"] < full["state_mib"]
    assert lora["peak_mib"] < full["peak_mib"]
