"""`make demo-rl`: GRPO on top of the `make demo` run, measured on held-out prompts against more SFT.

1. export the demo run's last checkpoint (the starting point of both arms);
2. score it on held-out prompts (data/demo/eval, never sampled by GRPO): SAMPLES seeded generations per
   prompt with the inference defaults, rewards dnsmos, sim, duration, stop (weights 1);
3. GRPO on 2 CPU ranks from it, on the training prompts (data/demo/train), for --steps steps: its wall time T;
4. SFT from the same start for the same wall time T (stopped by a signal, checkpointed), the control arm;
5. score both on the held-out prompts; print before -> after for both, and write runs/demo_rl/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from higgs_ds.data.shards import load_spec  # noqa: E402
from higgs_ds.export import export  # noqa: E402
from higgs_ds.inference import GenerationConfig, TTSRequest  # noqa: E402
from higgs_ds.rewards import build_rewards, fit_chars_per_second  # noqa: E402
from higgs_ds.rewards.candidates import load_sampler  # noqa: E402
from higgs_ds.train.audio_eval import read_utterances  # noqa: E402

REWARDS = {"dnsmos": 1.0, "sim": 1.0, "duration": 1.0, "stop": 1.0}
SAMPLES = 2  # seeded generations per held-out prompt


def held_out_scores(checkpoint: Path, prompts, rewards, max_frames: int) -> dict[str, float]:
    sampler = load_sampler(checkpoint)
    totals, parts = [], {name: [] for name in REWARDS}
    for i, utt in enumerate(prompts):
        request = TTSRequest(utt.text, ref_text=utt.ref_text, ref_codes=utt.ref_codes, id=utt.id)
        result = sampler.sample([request] * SAMPLES, GenerationConfig(seed=1000 + i, max_new_frames=max_frames))
        refs = [utt.ref_codes] * SAMPLES if utt.ref_codes is not None else None
        scored = rewards.score(sampler.reward_samples(result.codes, result.finished, [utt.text] * SAMPLES,
                                                      rewards.needs_audio, reference_codes=refs))
        totals += scored.total.tolist()
        for name, values in scored.components.items():
            parts[name] += [v for v in values.tolist() if not np.isnan(v)]
    return {"reward": float(np.mean(totals)), **{k: float(np.mean(v)) if v else float("nan") for k, v in parts.items()}}


def launch(run_dir: Path, init: Path, *overrides: str) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", os.environ.get("NPROC", "2"),
           "launch/train.py", "--deepspeed", "ds_configs/zero3.json", "--config", "recipes/demo.yaml",
           f"run_dir={run_dir}", f"model.init={init}", "eval_every=0", "predict_every=0", "audio_eval.every=0",
           "log_every=5", "optim.warmup_steps=5", "wandb_project=null", *overrides]
    return subprocess.Popen(cmd, cwd=REPO)


def stop_after(proc: subprocess.Popen, seconds: float) -> None:
    """SIGTERM to the ranks after `seconds`: each saves a checkpoint and exits (higgs_ds/train/stopping.py)."""
    try:
        proc.wait(timeout=seconds)
        return
    except subprocess.TimeoutExpired:
        pass
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="the make demo run to start from")
    parser.add_argument("--out", default="runs/demo_rl")
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps (the wall time both arms get)")
    parser.add_argument("--prompts", type=int, default=6, help="held-out prompts scored")
    parser.add_argument("--max-frames", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run, out = Path(args.run), Path(args.out)
    if not (run / "checkpoints" / "latest").is_file():
        print(f"error: no checkpoint in {run} (run_dir): run `make demo` first", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    init = export(run / "checkpoints", out / "init") if not (out / "init" / "config.json").is_file() else out / "init"
    spec = load_spec("data/demo/eval")
    prompts = read_utterances("data/demo/eval", args.prompts, spec)
    context = {"chars_per_second": fit_chars_per_second(["data/demo/train"]), "frame_rate": spec.frame_rate}
    rewards = build_rewards(REWARDS, context)

    before = held_out_scores(init, prompts, rewards, args.max_frames)
    print("before:", json.dumps(before), flush=True)
    rl_overrides = ["objective=grpo", "rewards=" + json.dumps(REWARDS), f"steps={args.steps}",
                    f"save_every={args.steps}", f"optim.lr={args.lr}", f"grpo.max_new_frames={args.max_frames}",
                    "grpo.prompts=2", "grpo.group_size=4"]
    start = time.perf_counter()
    proc = launch(out / "grpo", init, *rl_overrides)
    if proc.wait() != 0:
        return 1
    wall = time.perf_counter() - start
    start = time.perf_counter()
    stop_after(launch(out / "sft", init, "steps=100000", "save_every=100000", f"optim.lr={args.lr}"), wall)
    sft_wall = time.perf_counter() - start
    after = {"grpo": held_out_scores(out / "grpo", prompts, rewards, args.max_frames),
             "sft": held_out_scores(out / "sft", prompts, rewards, args.max_frames)}
    latest = out / "sft" / "checkpoints" / "latest"
    sft_steps = int(latest.read_text().strip().removeprefix("step")) if latest.is_file() else 0
    summary = {"before": before, "after": after, "grpo_wall_s": wall, "sft_wall_s": sft_wall,
               "grpo_steps": args.steps, "sft_steps": sft_steps, "held_out_prompts": len(prompts),
               "samples_per_prompt": SAMPLES}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    names = ["reward", *REWARDS]
    print(f"\nheld-out prompts: {len(prompts)} x {SAMPLES} samples; GRPO {args.steps} steps in {wall:.0f} s, "
          f"SFT {sft_steps} steps in {sft_wall:.0f} s")
    print(f"{'':14}" + "".join(f"{n:>10}" for n in names))
    print(f"{'start (SFT)':14}" + "".join(f"{before[n]:10.3f}" for n in names))
    for arm in ("grpo", "sft"):
        print(f"{'+' + arm.upper():14}" + "".join(f"{after[arm][n]:10.3f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
