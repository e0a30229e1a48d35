"""The real command lines, run the way a user runs them, for the fault tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from higgs_ds.train.metrics import read_metrics
from tests.train.launcher import DEEPSPEED, REPO, free_port

TRAIN_ARGS = ["--deepspeed", "ds_configs/zero3.json", "--config", "recipes/demo.yaml", "data.num_workers=1",
              "wandb_project=null", "model.hidden_size=64", "model.intermediate_size=128", "audio_eval.every=0",
              "eval_every=0", "predict_every=0", "log_every=1", "optim.warmup_steps=2"]
RESUME_STEPS = ("steps=10", "save_every=2", "keep_last=2")  # the runs whose losses are compared


def env(**extra: str) -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}


def start_train(run_dir: Path, data: dict, *overrides: str, ranks: int = 2, **extra_env: str) -> subprocess.Popen:
    """`deepspeed launch/train.py` on CPU ranks, started in the background."""
    cmd = [str(DEEPSPEED), "--num_gpus", str(ranks), "--master_port", str(free_port()), "launch/train.py",
           *TRAIN_ARGS, f"run_dir={run_dir}", f"data.shards={data['train']}", "data.eval_shards=null",
           f"data.tokenizer={data['tokenizer']}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: int = 900) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def train(run_dir: Path, data: dict, *overrides: str, ranks: int = 2, timeout: int = 900,
          **extra_env: str) -> subprocess.CompletedProcess:
    """`deepspeed launch/train.py` on CPU ranks; returns the finished process whatever its exit code."""
    return finish(start_train(run_dir, data, *overrides, ranks=ranks, **extra_env), timeout)


def python(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def losses(run_dir: Path) -> dict[int, tuple[float, float, float]]:
    """step -> (loss, text, audio); a step logged twice (re-run after a crash) must agree with itself."""
    by_step: dict[int, tuple[float, float, float]] = {}
    for r in read_metrics(run_dir / "metrics.jsonl"):
        values = (r["loss"], r["loss/text"], r["loss/audio"])
        assert by_step.setdefault(r["step"], values) == values, f"step {r['step']} logged twice, differently"
    return by_step


def last_metrics(run_dir: Path) -> dict:
    return read_metrics(run_dir / "metrics.jsonl")[-1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
