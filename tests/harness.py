"""The real command lines for the integration, fault and Slurm tests: `launch/train.py` on CPU ranks
(gloo) with a tiny model, and readers for what a run leaves. Ranks start through tests/ranks.py, which
gives them what `deepspeed --num_gpus N` gives them in a quarter of the start-up time; the tests about
the launcher itself pass `launcher="deepspeed"`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Literal

from higgs_ds.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
RANKS = Path(__file__).with_name("ranks.py")
Launcher = Literal["ranks", "deepspeed"]
RECIPE = ("--config", "recipes/demo.yaml")
# The demo recipe with a model small enough for CPU ranks, one data worker and nothing sent anywhere.
TINY_MODEL = ("model.hidden_size=64", "model.intermediate_size=128")
QUIET = ("data.num_workers=1", "wandb_project=null", "audio_eval.every=0")
# The runs whose per-step losses are compared: saves at steps 2, 4, ..., 10, two kept.
RESUME_STEPS = ("steps=10", "save_every=2", "keep_last=2")
# Only training steps, each logged: what the fault tests compare.
STEPS_ONLY = ("eval_every=0", "predict_every=0", "log_every=1", "optim.warmup_steps=2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    """This interpreter's environment for a child run: the repo importable, one thread per rank, no W&B."""
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}


def data_overrides(data: dict, with_eval: bool = True) -> list[str]:
    """`data` holds the paths of a train split, an eval split and a tokenizer (see tests/conftest.py)."""
    return [f"data.shards={data['train']}", f"data.eval_shards={data['eval'] if with_eval else 'null'}",
            f"data.tokenizer={data['tokenizer']}"]


def tiny_overrides(data: dict, *overrides: str, with_eval: bool = True) -> list[str]:
    """The key=value overrides of a tiny-model run on `data`; later overrides win."""
    return [*data_overrides(data, with_eval), *QUIET, *TINY_MODEL, *overrides]


def ranks_cmd(script: str, args: list[str], ranks: int = 2, launcher: Launcher = "ranks") -> list[str]:
    """`script` on `ranks` local CPU ranks: `deepspeed --num_gpus N` or its quick stand-in, tests/ranks.py."""
    start = [str(DEEPSPEED), "--num_gpus"] if launcher == "deepspeed" else [sys.executable, str(RANKS), "--ranks"]
    return [*start, str(ranks), "--master_port", str(free_port()), script, *args]


def start_train(run_dir: Path, data: dict, *overrides: str, ranks: int = 2, ds_config: str = "ds_configs/zero3.json",
                with_eval: bool = False, launcher: Launcher = "ranks", **extra_env: str) -> subprocess.Popen:
    """`launch/train.py` on `ranks` CPU ranks with the tiny demo recipe, started in the background. Without
    `with_eval` the run only trains (no eval split, no eval or predictions, every step logged)."""
    base = [] if with_eval else list(STEPS_ONLY)
    args = ["--deepspeed", ds_config, *RECIPE, f"run_dir={run_dir}",
            *tiny_overrides(data, *base, *overrides, with_eval=with_eval)]
    return subprocess.Popen(ranks_cmd("launch/train.py", args, ranks, launcher), cwd=REPO, env=env(**extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 900) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def train(run_dir: Path, data: dict, *overrides: str, ranks: int = 2, timeout: int = 900,
          ds_config: str = "ds_configs/zero3.json", with_eval: bool = False, launcher: Launcher = "ranks",
          **extra_env: str) -> subprocess.CompletedProcess:
    """`start_train` run to its end; returns the finished process whatever its exit code."""
    return finish(start_train(run_dir, data, *overrides, ranks=ranks, ds_config=ds_config, with_eval=with_eval,
                              launcher=launcher, **extra_env), timeout)


def run_training(run_dir: Path, data: dict, *overrides: str, ranks: int = 2,
                 ds_config: str = "ds_configs/zero3.json", timeout: int = 900,
                 launcher: Launcher = "ranks") -> subprocess.CompletedProcess:
    """`train` with the eval split, eval and predictions as the recipe has them; a non-zero exit is an
    AssertionError carrying the run's output."""
    return checked(train(run_dir, data, *overrides, ranks=ranks, timeout=timeout, ds_config=ds_config,
                         with_eval=True, launcher=launcher))


def run_deepspeed(script: str, args: list[str], ranks: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    """Any DeepSpeed script on `ranks` CPU ranks; it must exit 0."""
    proc = subprocess.run(ranks_cmd(script, args, ranks), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    return checked(proc)


def python(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """A repo script under this interpreter; returns whatever its exit code."""
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def output(proc: subprocess.CompletedProcess) -> str:
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return f"{args}\nexited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(output(proc))
    return proc


def losses(run_dir: Path, repeats: bool = False) -> dict[int, tuple[float, float, float]]:
    """step -> (loss, text, audio). A step logged twice is an error, unless `repeats` (a run re-run
    after a crash logs steps again): then the two must agree."""
    by_step: dict[int, tuple[float, float, float]] = {}
    for row in read_metrics(run_dir / "metrics.jsonl"):
        values = (row["loss"], row["loss/text"], row["loss/audio"])
        if row["step"] in by_step:
            assert repeats, f"step {row['step']} logged twice in {run_dir}"
            assert by_step[row["step"]] == values, f"step {row['step']} logged twice, differently"
        by_step[row["step"]] = values
    return by_step


def last_metrics(run_dir: Path) -> dict:
    return read_metrics(run_dir / "metrics.jsonl")[-1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
