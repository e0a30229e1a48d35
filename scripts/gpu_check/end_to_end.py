"""The product end to end on one device: train, save, resume, export in both layouts, generate, score.

    python scripts/gpu_check/end_to_end.py --data DIR --work DIR --json FILE [--device cuda] [sizes]

`--data` holds `train/`, `eval/` (shards) and `tokenizer/`, as `make gpu-wheels` copies the demo into
`.gpu_wheels/demo/`. Training goes through the real launcher (`deepspeed --num_gpus 1 launch/train.py
--deepspeed ds_configs/zero3.json --config recipes/demo.yaml`): NCCL on a GPU, gloo on the CPU. The run
stops at `--steps` (checkpointed every `--save-every`), then `resume=auto` trains `--more` steps. The
export runs in this process; generation and scoring run `launch/generate.py --score` as a command line,
with this interpreter.

Writes one JSON object to `--json`: status (passed / failed), reason, and what each part produced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with train/, eval/, tokenizer/")
    p.add_argument("--work", type=Path, required=True, help="run, exports and wav go here")
    p.add_argument("--json", type=Path, required=True, help="result written here")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--steps", type=int, default=60, help="steps of the first job (it stops there, checkpointed)")
    p.add_argument("--more", type=int, default=20, help="steps of the resumed job")
    p.add_argument("--save-every", type=int, default=20)
    p.add_argument("--window", type=int, default=5, help="losses averaged on each side of the resume")
    p.add_argument("--frames", type=int, default=100, help="most audio frames generated (25 per second)")
    p.add_argument("--overrides", nargs="*", default=[], help="extra key=value training overrides (model size)")
    return p.parse_args(argv)


# ---- the resume rule ---------------------------------------------------------------------------
MAX_JUMP = 0.25  # share of the loss already learned that the resumed job may lose


def loss_continuity(losses: dict[int, float], stop: int, window: int) -> dict:
    """Whether the loss continues across a resume at step `stop`. With means of `window` logged losses
    `start` (steps 1..w), `before` (stop-w+1..stop) and `after` (stop+1..stop+w), the resumed job must
    keep at least 1 - MAX_JUMP of what the first learned: `jump = (after - before) / (start - before)`
    <= MAX_JUMP. A job restarted from fresh weights gives jump ~ 1; a lost optimizer state or data
    position shows as a spike. The first job must have learned something (`start > before`), else the
    rule has nothing to measure."""
    missing = [s for s in (*range(1, window + 1), *range(stop - window + 1, stop + window + 1)) if s not in losses]
    if missing:
        return {"ok": False, "reason": f"no logged loss for steps {missing[:10]}"}
    mean = lambda steps: sum(losses[s] for s in steps) / len(steps)  # noqa: E731
    start, before = mean(range(1, window + 1)), mean(range(stop - window + 1, stop + 1))
    after = mean(range(stop + 1, stop + window + 1))
    learned = start - before
    result = {"start": start, "before": before, "after": after, "first_resumed": losses[stop + 1],
              "max_jump": MAX_JUMP}
    if not all(math.isfinite(x) for x in (start, before, after)):
        return {**result, "ok": False, "reason": "non-finite loss"}
    if learned <= 0:
        return {**result, "ok": False, "reason": f"the loss did not fall before the resume ({start:.3f} -> "
                                                 f"{before:.3f}): nothing to check continuity against"}
    jump = (after - before) / learned
    ok = jump <= MAX_JUMP
    return {**result, "jump": jump, "ok": ok,
            "reason": None if ok else f"the loss jumped back on resume: {before:.3f} before, {after:.3f} after "
                                      f"({jump:.0%} of what was learned, limit {MAX_JUMP:.0%})"}


# ---- the parts -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(args, run_dir: Path, *extra: str) -> None:
    """One job under the DeepSpeed launcher, one process on one device."""
    data = args.data
    total = args.steps + args.more
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", str(_free_port()),
           "launch/train.py", "--deepspeed", "ds_configs/zero3.json", "--config", "recipes/demo.yaml",
           f"run_dir={run_dir}", f"data.shards={data / 'train'}", f"data.eval_shards={data / 'eval'}",
           f"data.tokenizer={data / 'tokenizer'}", "data.num_workers=1", f"steps={total}", "log_every=1",
           f"save_every={args.save_every}", f"eval_every={args.save_every}", "predict_every=0", "keep_last=10",
           "audio_eval.every=0", "wandb_project=null", f"precision={args.precision}",
           f"optim.warmup_steps={max(1, args.steps // 10)}", *args.overrides, *extra]
    _run(cmd, f"training ({' '.join(extra) or 'first job'})")


def _run(cmd: list[str], what: str) -> None:
    """A command line with this interpreter, echoed and run from the repository root; failing, it fails the part."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}")


def check_checkpoints(args, run_dir: Path) -> dict:
    ckpts = run_dir / "checkpoints"
    expected = [f"step{s:06d}" for s in range(args.save_every, args.steps + 1, args.save_every)]
    if args.steps % args.save_every:
        expected.append(f"step{args.steps:06d}")  # stop_at saves too
    present = sorted(p.name for p in ckpts.glob("step*") if p.is_dir())
    latest = (ckpts / "latest").read_text().strip() if (ckpts / "latest").exists() else None
    if latest != expected[-1] or not set(expected) <= set(present):
        raise RuntimeError(f"checkpoints after the first job: {present}, latest {latest}; expected {expected}")
    return {"tags": present, "latest": latest}


def check_resume(args, run_dir: Path) -> dict:
    from higgs_ds.train.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    total = args.steps + args.more
    if steps != list(range(1, total + 1)):
        raise RuntimeError(f"logged steps are not 1..{total} once each: {steps[:5]} ... {steps[-5:]}")
    continuity = loss_continuity({r["step"]: r["loss"] for r in rows}, args.steps, args.window)
    if not continuity["ok"]:
        raise RuntimeError(continuity["reason"])
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    if latest != f"step{total:06d}":
        raise RuntimeError(f"the resumed job's last checkpoint is {latest}, not step{total:06d}")
    return {**continuity, "losses": [r["loss"] for r in rows], "peak_mem_gb": rows[-1].get("peak_mem_gb"),
            "tokens_per_s": rows[-1].get("tokens_per_s")}


def export_both(run_dir: Path, work: Path) -> dict:
    """Both layouts through launch/export.py, read back: the same weights as the run's last checkpoint."""
    import torch

    from higgs_ds.export import export
    from higgs_ds.models.pretrained import from_pretrained
    from higgs_ds.run_dir import find_run_checkpoint

    reference = find_run_checkpoint(run_dir / "checkpoints", None).state_dict()
    out = {}
    for layout in ("hf", "boson"):
        folder = export(run_dir / "checkpoints", work / f"export_{layout}", layout=layout)
        weights = from_pretrained(folder).state_dict()
        differ = [k for k, v in weights.items() if not torch.equal(v, reference[k].to(v.dtype))]
        if set(weights) != set(reference) or differ:
            raise RuntimeError(f"the {layout} export read back differs from the checkpoint: "
                               f"{sorted(set(weights) ^ set(reference))[:5] or differ[:5]}")
        out[layout] = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir()),
                       "tensors": len(weights)}
    return out


def generate_and_score(args, export_dir: Path, work: Path) -> dict:
    """launch/generate.py on the export: a wav whose length is its frames times the codec's hop, scored by
    the offline scorer (DNSMOS; no reference voice, no ASR model here)."""
    import numpy as np
    import soundfile

    from higgs_ds.data.demo import shipped_demo_codec
    from higgs_ds.data.shards import iter_tar_samples, list_shards
    from higgs_ds.models.pretrained import checkpoint_audio_spec

    text = json.loads(next(iter_tar_samples(list_shards(args.data / "train")[0]))["json"])["text"]
    wav_path = work / "generated" / "speech.wav"
    spec = checkpoint_audio_spec(export_dir)
    # The data was encoded on another machine: its recorded codec path is that machine's. The shipped demo
    # codec is used instead (generate checks that its weights are the ones the spec names).
    codec = [] if Path(spec.codec_path or "").exists() else ["--codec-path", str(shipped_demo_codec())]
    cmd = [sys.executable, "launch/generate.py", str(export_dir), "--text", text, "--out", str(wav_path),
           "--device", args.device, "--seed", "0", "--max-new-frames", str(args.frames), "--score",
           "--no-resemblyzer", "--no-mcd", *codec]
    _run(cmd, "launch/generate.py")
    codes = np.load(wav_path.with_suffix(".npy"))
    wav, sample_rate = soundfile.read(str(wav_path))
    expected = round(codes.shape[1] * spec.sample_rate / spec.frame_rate)
    if sample_rate != spec.sample_rate or len(wav) != expected or codes.shape[0] != spec.num_codebooks:
        raise RuntimeError(f"{wav_path}: {len(wav)} samples at {sample_rate} Hz from codes {codes.shape}; expected "
                           f"{expected} at {spec.sample_rate} Hz ({spec.num_codebooks} codebooks)")
    if codes.shape[1] == 0:
        raise RuntimeError(f"{wav_path}: the model stopped before its first frame (empty wav)")
    scores = json.loads(wav_path.with_suffix(".scores.json").read_text())
    means = {k: v.get("mean") for k, v in scores["summary"].items()}
    if not means or not all(isinstance(v, float) and math.isfinite(v) for v in means.values()):
        raise RuntimeError(f"scores of {wav_path}: {means}")
    return {"wav": str(wav_path), "text": text, "frames": int(codes.shape[1]), "audio_s": len(wav) / sample_rate,
            "sample_rate": sample_rate, "scores": means}


def main(argv=None) -> int:
    args = parse_args(argv)
    args.data, args.work = args.data.resolve(), args.work.resolve()
    result = {"status": "failed", "reason": None, "device": args.device, "precision": args.precision,
              "steps": args.steps, "more": args.more, "parts": {}}
    t0 = time.monotonic()

    def part(name, fn, *fn_args):
        t = time.monotonic()
        result["parts"][name] = {"seconds": None}
        value = fn(*fn_args)
        result["parts"][name] = {**(value or {}), "seconds": round(time.monotonic() - t, 1)}

    try:
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda but torch sees no CUDA device (CUDA_VISIBLE_DEVICES="
                                   f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); the CPU rehearsal is --device cpu")
        for sub in ("train", "eval", "tokenizer"):
            if not (args.data / sub).is_dir():
                raise FileNotFoundError(f"{args.data / sub} is missing: `make gpu-wheels` copies the demo data "
                                        f"into .gpu_wheels/demo/")
        run_dir = args.work / "run"
        part("train", train, args, run_dir, f"stop_at={args.steps}")
        part("checkpoints", check_checkpoints, args, run_dir)
        part("resume", train, args, run_dir, "resume=auto")
        part("continuity", check_resume, args, run_dir)
        part("export", export_both, run_dir, args.work)
        part("generate", generate_and_score, args, args.work / "export_boson", args.work)
        result["status"] = "passed"
    except Exception as e:  # noqa: BLE001 - the reason goes into the report, the stage fails
        failed = next((n for n, p in result["parts"].items() if p.get("seconds") is None), "setup")
        result["reason"] = f"{failed}: {type(e).__name__}: {e}"
        print(f"[end_to_end] FAILED {result['reason']}", flush=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # the library of this checkout, also where the package is not installed
    sys.exit(main())
