"""A few training steps of a DualFFN model on synthetic batches: tokens/s, MFU and peak memory.

One process, one device, one ops backend per run (`--backend triton|torch`; a comma list runs them one
after the other, plain PyTorch only). When DeepSpeed imports, it is a single-process ZeRO-3 run built the
way the training loop builds it (`zero.Init`, leaf decoder layers for the Triton path, the project's AdamW
and schedule); otherwise plain PyTorch AdamW on the same weights.
A batch is `--batch` samples of `--seq` tokens: text first, then `--audio-fraction` of audio-out frames,
so both heads and both MLPs of every layer get their share. Writes train_<backend>.json into `--json-dir`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from higgs_ds import ops
from higgs_ds.constants import IGNORE_INDEX
from higgs_ds.models import DEFAULT_FAMILY, get_family
from higgs_ds.models.loss import LossWeights, combine
from higgs_ds.train.metrics import peak_memory_gb

FAMILY = get_family(DEFAULT_FAMILY)  # the model the GPU check measures: the demo's family

REPO = Path(__file__).resolve().parents[2]
# Dense bf16 tensor-core peak per device (vendor datasheets, SXM parts), for MFU.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", required=True, help="triton, torch, or a comma list of both")
    p.add_argument("--engine", choices=("auto", "deepspeed", "torch"), default="auto")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--audio-fraction", type=float, default=0.4)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (Triton compiles here)")
    p.add_argument("--steps", type=int, default=8, help="timed steps (fewer if --max-seconds would be exceeded)")
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="stop timing steps after this")
    p.add_argument("--json-dir", type=Path, required=True)
    args = p.parse_args()
    args.backends = args.backend.split(",")
    if set(args.backends) - {"triton", "torch"}:
        p.error(f"--backend {args.backend}: use triton, torch or triton,torch")
    if len(args.backends) > 1 and args.engine != "torch":
        p.error("several backends in one process need --engine torch (DeepSpeed initialises once per process)")
    return args


def synthetic_batch(mcfg, batch: int, seq: int, audio_fraction: float, device) -> dict:
    gen = torch.Generator().manual_seed(0)
    n_audio = round(seq * audio_fraction)
    n_text = seq - n_audio
    input_ids = torch.randint(0, mcfg.vocab_size - 5, (batch, seq), generator=gen)  # below tiny_config's ids
    input_ids[:, n_text:] = mcfg.audio_out_token_idx
    labels = input_ids.clone()
    labels[:, n_text:] = IGNORE_INDEX
    audio_ids = torch.randint(0, mcfg.audio_codebook_size, (batch * n_audio, mcfg.audio_num_codebooks), generator=gen)
    tensors = {"input_ids": input_ids, "audio_ids": audio_ids, "attention_mask": torch.ones_like(input_ids),
               "labels": labels, "audio_labels": audio_ids.clone()}
    return {k: v.to(device) for k, v in tensors.items()}


def _loss(model, batch):
    out = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                audio_labels=batch["audio_labels"])
    return combine(out.loss_sums, LossWeights()).loss


def deepspeed_engine(mcfg, args, n_steps: int):
    """ZeRO-3 in one process, from ds_configs/zero3.json and the training config's defaults."""
    import deepspeed

    from higgs_ds.train.build import build_optimizer
    from higgs_ds.train.config import load_config
    from higgs_ds.train.distributed import init_distributed
    from higgs_ds.train.ds_config import build_ds_config
    from higgs_ds.train.parallelize import build_model_sharded

    cfg = load_config(None, [f"precision={args.precision}", f"data.stream.max_batch_size={args.batch}",
                             f"steps={n_steps}", "optim.warmup_steps=0"])
    init_distributed()
    ds_config = build_ds_config(REPO / "ds_configs" / "zero3.json", cfg, world_size=1)
    model = build_model_sharded(FAMILY, mcfg, ds_config)
    model.gradient_checkpointing = getattr(args, "activation_checkpointing", False)  # as the training loop sets it
    optimizer, scheduler = build_optimizer(model, cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)

    def step(batch):
        loss = _loss(engine, batch)
        engine.backward(loss)
        engine.step()
        return loss.detach()

    return engine.module, engine.device, step


def torch_engine(mcfg, args):
    """Plain PyTorch: weights in the run's precision, fused AdamW where the device has it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    with torch.device(device):
        model = FAMILY.build_model(mcfg, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01,
                                  fused=device.type == "cuda")

    def step(batch):
        loss = _loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return model, device, step


def pick_engine(name: str) -> tuple[str, str | None]:
    if name != "auto":
        return name, None
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: no DeepSpeed here
        return "torch", f"deepspeed does not import ({type(e).__name__}: {e})"
    return "deepspeed", None


def active_params(model) -> tuple[int | None, str | None]:
    """`active_params_per_token` of the training loop (which imports DeepSpeed at module level)."""
    try:
        from higgs_ds.train.metrics import active_params_per_token
    except Exception as e:  # noqa: BLE001
        return None, f"higgs_ds.train.loop does not import ({type(e).__name__}: {e})"
    return active_params_per_token(model), None


def matmul_tflops(device) -> float | None:
    """Measured bf16 GEMM rate (8192^3), the practical ceiling MFU can also be read against."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args, backend: str) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(0)
    ops.set_backend(backend)  # before the model is built: ZeRO-3 leaf modules depend on it
    mcfg = FAMILY.tiny_config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
                       max_position_embeddings=max(4096, args.seq))
    engine, engine_note = pick_engine(args.engine)
    if engine == "deepspeed":
        model, device, step = deepspeed_engine(mcfg, args, args.warmup + args.steps)
    else:
        model, device, step = torch_engine(mcfg, args)
    device = torch.device(device)
    batch = synthetic_batch(mcfg, args.batch, args.seq, args.audio_fraction, device)
    n_active, active_note = active_params(model)
    setup_s = time.perf_counter() - t_start

    t0 = time.perf_counter()
    losses = [step(batch).item() for _ in range(args.warmup)]
    _sync(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times = []
    deadline = t_start + args.max_seconds
    while len(step_times) < args.steps and (not step_times or time.perf_counter() + step_times[-1] < deadline):
        t0 = time.perf_counter()
        losses.append(step(batch).item())
        _sync(device)
        step_times.append(time.perf_counter() - t0)

    step_s = sorted(step_times)[len(step_times) // 2]  # median
    tokens = args.batch * args.seq
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in torch.cuda.get_device_name(0)), None) \
        if device.type == "cuda" and args.precision == "bf16" else None
    gemm = matmul_tflops(device)
    flops_per_s = 6 * n_active * tokens / step_s if n_active else None
    return {
        "backend": backend, "engine": engine, "engine_note": engine_note, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "precision": args.precision, "torch": torch.__version__,
        "model": {"layers": args.layers, "hidden": args.hidden, "intermediate": args.intermediate,
                  "heads": args.heads, "kv_heads": args.kv_heads, "vocab": args.vocab,
                  "params": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
                  "active_params_per_token": n_active, "active_note": active_note},
        "tokens_per_step": tokens, "audio_fraction": args.audio_fraction,
        "steps_timed": len(step_times), "step_s": step_s, "tokens_per_s": tokens / step_s,
        "peak_tflops": peak, "mfu": flops_per_s / (peak * 1e12) if flops_per_s and peak else None,
        "matmul_tflops": gemm, "mfu_vs_matmul": flops_per_s / (gemm * 1e12) if flops_per_s and gemm else None,
        "peak_mem_gib": peak_memory_gb(), "losses": losses,
        "losses_finite": all(math.isfinite(x) for x in losses),
        "setup_s": setup_s, "warmup_s": warmup_s, "total_s": time.perf_counter() - t_start,
    }


def main() -> None:
    args = parse_args()
    args.json_dir.mkdir(parents=True, exist_ok=True)
    for backend in args.backends:
        r = run(args, backend)
        (args.json_dir / f"train_{backend}.json").write_text(json.dumps(r, indent=2) + "\n")
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"[train] {backend} backend, {r['engine']}: {r['tokens_per_s']:.0f} tokens/s, MFU {mfu}, "
              f"peak {r['peak_mem_gib']:.1f} GiB, loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}", flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
