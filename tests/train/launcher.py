"""Run a script under the real DeepSpeed launcher with N CPU ranks (gloo), for integration tests."""

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_deepspeed(script: str, args: list[str], ranks: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [str(DEEPSPEED), "--num_gpus", str(ranks), "--master_port", str(free_port()), script, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                             f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def run_training(run_dir: Path, data: dict, *overrides: str, ranks: int = 2, ds_config: str = "ds_configs/zero3.json"):
    """`launch/train.py` with the demo recipe, a smaller model and the given data (train, eval, tokenizer)."""
    args = ["--deepspeed", ds_config, "--config", "recipes/demo.yaml", f"run_dir={run_dir}",
            f"data.shards={data['train']}", f"data.eval_shards={data['eval']}",
            f"data.tokenizer={data['tokenizer']}", "data.num_workers=1", "wandb_project=null",
            "model.hidden_size=64", "model.intermediate_size=128", "audio_eval.every=0", *overrides]
    return run_deepspeed("launch/train.py", args, ranks=ranks)
