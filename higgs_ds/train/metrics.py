"""Metric sinks (rank 0 only): the console, `metrics.jsonl` in the run directory, and wandb
(offline unless the user is logged in), plus the loss-curve PNG written at the end."""

from __future__ import annotations

import json
import logging
import os
import resource
from pathlib import Path

import torch

log = logging.getLogger("higgs_ds")


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


class MetricsWriter:
    def __init__(self, run_dir: Path, config: dict, wandb_project: str | None, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.wandb = None
        if not enabled:
            return
        if wandb_project:
            import wandb

            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self.wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config, mode=mode,
                                    name=run_dir.name, resume="allow")

    def write(self, step: int, metrics: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.wandb is not None:
            prefix = "" if kind == "train" else f"{kind}/"
            self.wandb.log({prefix + k: v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: Path, kind: str = "train") -> list[dict]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == kind]


def plot_loss_curves(run_dir: Path) -> Path | None:
    """loss, loss/text and loss/audio (and eval loss) against step, as run_dir/loss_curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_metrics(run_dir / "metrics.jsonl")
    if not train:
        return None
    evals = read_metrics(run_dir / "metrics.jsonl", "eval")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in ("loss", "loss/text", "loss/audio"):
        ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o--", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    out = run_dir / "loss_curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
