"""Peak memory of the released width under ZeRO-3 with activation checkpointing, per layer and per token,
set against the sizing estimate (docs/sizing.md).

    python scripts/gpu_check/memory_probe.py --json FILE [--layers 2,4] [--tokens 4096,8192] [--hidden 3072 ...]

One single-process ZeRO-3 run per layer count (in parallel: each process has its own peak counter),
built as the training loop builds it (train_steps.deepspeed_engine), bf16, one sample of T tokens at 40%
audio. For each count L: `states(L)`, the memory held between steps once the optimizer has stepped, and
`peak(L, T)`, the peak of one step. Then, with two counts and two token budgets:
- per layer: (states(L2) - states(L1)) / (L2 - L1), against 18 bytes per parameter (one rank holds all);
- per token: (peak(L, T2) - peak(L, T1)) / (T2 - T1), and per token and layer from its change with L;
  extrapolated to the released 28 layers, against the estimate's 0.5 MB per token with checkpointing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELEASED_LAYERS = 28
# The sizing estimate's figures (docs/sizing.md): model states per parameter (bf16 weight, fp32 gradient,
# fp32 master, Adam moments), and activations per token with one checkpoint per layer.
STATE_BYTES_PER_PARAM = 18
CKPT_BYTES_PER_TOKEN_RELEASED = 0.5 * 2**20
TOLERANCE = 1.5  # measured above estimate x this: the sizing table promises more than the GPU holds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--layers", default="2,4", help="two layer counts")
    p.add_argument("--tokens", default="4096,8192", help="two token budgets (one sample each)")
    p.add_argument("--hidden", type=int, default=3072)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure this layer count only
    return p.parse_args(argv)


def measure_one(args) -> dict:
    """One process, one layer count: states after an optimizer step, then the peak of one step per budget."""
    import torch
    from train_steps import deepspeed_engine, synthetic_batch

    from higgs_ds import ops
    from higgs_ds.models import DEFAULT_FAMILY, get_family

    tokens = [int(t) for t in args.tokens.split(",")]
    torch.manual_seed(0)
    ops.set_backend("auto")
    tiny_config = get_family(DEFAULT_FAMILY).tiny_config  # the demo's family, as the GPU check trains it
    mcfg = tiny_config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.one, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                       head_dim=args.hidden // args.heads, max_position_embeddings=max(4096, *tokens))
    probe_args = argparse.Namespace(precision=args.precision, batch=1, activation_checkpointing=True)
    model, device, step = deepspeed_engine(mcfg, probe_args, n_steps=len(tokens) + 1)
    device = torch.device(device)
    cuda = device.type == "cuda"
    layer_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.layers[0].parameters())
    batches = {t: synthetic_batch(mcfg, 1, t, 0.4, device) for t in tokens}
    losses = [step(batches[tokens[0]]).item()]  # the optimizer allocates its states here
    if cuda:
        torch.cuda.synchronize()
    states = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    peaks = {}
    for t in tokens:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        losses.append(step(batches[t]).item())
        peaks[t] = torch.cuda.max_memory_allocated() if cuda else _rss_bytes()
    return {"layers": args.one, "layer_params": layer_params, "states_bytes": states,
            "peak_bytes": {str(t): v for t, v in peaks.items()}, "losses": losses, "device": str(device),
            "device_name": torch.cuda.get_device_name(0) if cuda else "cpu"}


def _rss_bytes() -> int:
    """The process's peak resident set (the CPU has no resettable allocator counter)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def compare(runs: list[dict], tokens: list[int], hidden: int) -> dict:
    """Per-layer and per-token figures from two layer counts x two budgets, against the estimate."""
    (a, b), (t1, t2) = sorted(runs, key=lambda r: r["layers"]), tokens
    dl = b["layers"] - a["layers"]
    slope = {r["layers"]: (r["peak_bytes"][str(t2)] - r["peak_bytes"][str(t1)]) / (t2 - t1) for r in (a, b)}
    per_layer_states = (b["states_bytes"] - a["states_bytes"]) / dl
    per_token_layer = (slope[b["layers"]] - slope[a["layers"]]) / dl
    released_per_token = slope[b["layers"]] + (RELEASED_LAYERS - b["layers"]) * per_token_layer
    expected_states = STATE_BYTES_PER_PARAM * a["layer_params"]
    out = {"states_per_layer_bytes": per_layer_states, "states_per_layer_estimate_bytes": expected_states,
           "act_per_token_bytes": {str(r["layers"]): slope[r["layers"]] for r in (a, b)},
           "act_per_token_per_layer_bytes": per_token_layer,
           "act_per_token_per_layer_estimate_bytes": 2 * hidden,  # the checkpointed layer input, bf16
           "act_per_token_released_bytes": released_per_token,
           "act_per_token_released_estimate_bytes": CKPT_BYTES_PER_TOKEN_RELEASED}
    problems = []
    if per_layer_states > TOLERANCE * expected_states:
        problems.append(f"model states {per_layer_states / 2**20:.0f} MiB per layer, estimate "
                        f"{expected_states / 2**20:.0f} MiB")
    if released_per_token > TOLERANCE * CKPT_BYTES_PER_TOKEN_RELEASED:
        problems.append(f"activations {released_per_token / 2**20:.2f} MiB per token at {RELEASED_LAYERS} layers, "
                        f"estimate {CKPT_BYTES_PER_TOKEN_RELEASED / 2**20:.2f} MiB")
    out["problems"] = problems
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        args.json.write_text(json.dumps(measure_one(args)) + "\n")
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        return 0
    layers, tokens = [int(x) for x in args.layers.split(",")], [int(t) for t in args.tokens.split(",")]
    if len(layers) != 2 or len(tokens) != 2 or layers[0] == layers[1] or tokens[0] >= tokens[1]:
        raise SystemExit(f"--layers {args.layers} --tokens {args.tokens}: two different layer counts and two "
                         "increasing token budgets")
    procs = {}
    for i, n in enumerate(layers):  # in parallel: one device, separate peak counters
        out = args.json.with_name(f"{args.json.stem}_{n}_layers.json")
        out.unlink(missing_ok=True)
        env = {**os.environ, "MASTER_PORT": str(29400 + os.getpid() % 500 + i), "RANK": "0", "LOCAL_RANK": "0",
               "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
        cmd = [sys.executable, __file__, "--json", str(out), "--one", str(n), "--tokens", args.tokens,
               "--hidden", str(args.hidden), "--intermediate", str(args.intermediate), "--heads", str(args.heads),
               "--kv-heads", str(args.kv_heads), "--vocab", str(args.vocab), "--precision", args.precision]
        procs[n] = (subprocess.Popen(cmd, env=env), out)
    runs, failed = [], []
    for n, (proc, out) in procs.items():
        if proc.wait() != 0 or not out.exists():
            failed.append(f"{n} layers exited {proc.returncode}")
        else:
            runs.append(json.loads(out.read_text()))
    result = {"model": {"hidden": args.hidden, "intermediate": args.intermediate, "heads": args.heads,
                        "kv_heads": args.kv_heads, "vocab": args.vocab, "precision": args.precision},
              "tokens": tokens, "runs": runs}
    if failed:
        result.update(status="failed", reason="; ".join(failed))
    elif not all(math.isfinite(x) for r in runs for x in r["losses"]):
        result.update(status="failed", reason="non-finite loss")
    else:
        result.update(compare(runs, tokens, args.hidden))
        on_gpu = all(r["device"].startswith("cuda") for r in runs)
        result["compared"] = on_gpu
        if not on_gpu:
            result.update(status="passed", problems=[],
                          reason="CPU: resident-set figures, not set against the GPU estimate")
        else:
            result.update(status="failed" if result["problems"] else "passed",
                          reason="; ".join(result["problems"]) or None)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
