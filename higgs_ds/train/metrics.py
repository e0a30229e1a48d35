"""Training metrics: global reductions over ranks (losses, accuracies, data counters), the metric window
between two log lines, MFU counting, the label-alignment sanity guards, and the sinks (rank 0 only):
`metrics.jsonl`, wandb (offline unless the user is logged in), TensorBoard and the loss-curve PNG."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

import torch

from higgs_ds.comm import all_reduce, world_size
from higgs_ds.models.loss import LossSums, LossWeights, combine

log = logging.getLogger(__name__)


def zero_sums(k: int, device) -> LossSums:
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    return LossSums(z(()), z(()), z(()), z(k), z(k), z(k))


def accumulate(acc: LossSums, s: LossSums) -> None:
    for name in ("text_sum", "text_count", "text_correct", "audio_sum", "audio_count", "audio_correct"):
        getattr(acc, name).add_(getattr(s, name).detach())


def global_loss_metrics(sums: LossSums, weights: LossWeights) -> dict:
    """Global (all-rank) mean losses and accuracies from accumulated sums."""
    k = sums.audio_sum.numel()
    flat = torch.cat([sums.text_sum.view(1), sums.text_count.view(1), sums.text_correct.view(1),
                      sums.audio_sum, sums.audio_count, sums.audio_correct]).detach().float()
    flat = all_reduce(flat)
    t_sum, t_cnt, t_cor = flat[0], flat[1], flat[2]
    a_sum, a_cnt, a_cor = flat[3:3 + k], flat[3 + k:3 + 2 * k], flat[3 + 2 * k:]
    parts = combine(LossSums(t_sum, t_cnt, t_cor, a_sum, a_cnt, a_cor), weights)
    metrics = {"loss": parts.loss.item(), "loss/text": parts.text.item(), "loss/audio": parts.audio.item(),
         "acc/text": (t_cor / t_cnt.clamp(min=1)).item()}
    for i in range(k):
        metrics[f"loss/audio_cb{i}"] = parts.audio_per_codebook[i].item()
        metrics[f"acc/audio_cb{i}"] = (a_cor[i] / a_cnt[i].clamp(min=1)).item()
    return metrics


def global_loader_metrics(loader, device) -> dict:
    """The data counters of all ranks: skip counts summed, fractions averaged."""
    local = loader.metrics()
    keys = sorted(local)
    values = all_reduce(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64, device=device))
    world = world_size()
    averaged = {"padding_fraction", "last_padding_fraction", "epoch", "batches"}
    return {f"data/{k}": v / world if k in averaged else v for k, v in zip(keys, values.tolist(), strict=True)}


@dataclass
class MetricWindow:
    """What the loop sums between two metric lines."""

    sums: LossSums
    time: float = 0.0
    wait: float = 0.0
    tokens: torch.Tensor | int = 0  # a device tensor: read at the log step, not synced per batch
    samples: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, k: int, device) -> MetricWindow:
        return cls(zero_sums(k, device))

    def add_batch(self, sums: LossSums, batch: dict) -> None:
        accumulate(self.sums, sums)
        self.tokens = self.tokens + batch["attention_mask"].sum()
        self.samples += batch["input_ids"].shape[0]

    def rates(self, device) -> dict:
        """Global tokens/s and samples/s over the window, and this rank's data-wait share."""
        tokens = torch.as_tensor(self.tokens, device=device).to(torch.float64)
        samples = torch.tensor(float(self.samples), dtype=torch.float64, device=device)
        totals = all_reduce(torch.stack([tokens, samples]))
        tokens_total, samples_total = totals.tolist()
        elapsed = max(self.time, 1e-9)
        return {"tokens_per_s": tokens_total / elapsed, "samples_per_s": samples_total / elapsed,
                "data_wait_frac": self.wait / elapsed}


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 partitions report their full size here


def parameter_count(model) -> int:
    return sum(_numel(p) for p in model.parameters())


def active_params_per_token(model) -> int:
    """Parameters one token's forward passes through: attention, norms and ONE of the two MLPs per
    layer (DualFFN routes each token to exactly one). Embedding lookups and the heads (applied to
    labelled rows only) are left out, as is attention's sequence-length term: MFU = 6·N·tokens/s."""
    total = 0
    for layer in model.layers:
        total += sum(_numel(p) for p in layer.self_attn.parameters()) + sum(_numel(p) for p in layer.mlp.parameters())
        total += sum(_numel(p) for p in layer.input_layernorm.parameters()) * 2
    return total


def mfu(active_params: int, tokens_per_s: float, peak_tflops: float, world: int) -> float:
    return 6 * active_params * tokens_per_s / (peak_tflops * 1e12 * world)


def sanity_checks(step: int, logged: dict, vocab: int, codebook_rows: int, real_data_steps: int = 300) -> None:
    """Warn on the signatures of label-alignment bugs: a step-0 loss above the uniform bound (logits and
    labels paired at the same position) and near-perfect audio accuracy before the model has seen any
    sample twice (it copies its input). Later, near-perfect accuracy is memorisation (the demo reaches it
    after ~20 passes over its 207 utterances), which the held-out eval tells apart. Without the data
    loader's `data/epoch`, the first `real_data_steps` steps stand in for the first pass."""
    if step == 0:
        for key, bound in (("loss/text", math.log(vocab)), ("loss/audio", math.log(codebook_rows))):
            if logged[key] > bound + 1.0:
                log.warning("step 0 %s=%.2f is far above the uniform bound ln(%d)=%.2f: a freshly initialised "
                            "head cannot be this confidently wrong; check the label alignment (shift).",
                            key, logged[key], vocab if "text" in key else codebook_rows, bound)
    accs = [v for k, v in logged.items() if k.startswith("acc/audio_cb")]
    first_pass = logged["data/epoch"] < 1 if "data/epoch" in logged else step < real_data_steps
    if first_pass and accs and min(accs) > 0.98:
        log.warning("audio accuracy %.3f on every codebook at step %d, before any sample was seen twice: on real "
                    "speech this means the model sees its targets (copying its input), not that it learned "
                    "audio.", min(accs), step)


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


class MetricsWriter:
    """metrics.jsonl plus the optional sinks `loggers` names (wandb when `wandb_project` is set, tensorboard
    under run_dir/tensorboard/); a writer that is not `enabled` (every rank but 0) writes nothing."""

    def __init__(self, run_dir: Path, config: dict, wandb_project: str | None, enabled: bool,
                 loggers: tuple[str, ...] | list[str] = ("wandb",)):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.wandb = None
        self.tensorboard = None
        if not enabled:
            return
        if wandb_project and "wandb" in loggers:
            import wandb

            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self.wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config, mode=mode,
                                    name=run_dir.name, resume="allow")
        if "tensorboard" in loggers:
            from higgs_ds.train.tensorboard_log import TensorBoardLogger

            self.tensorboard = TensorBoardLogger(run_dir / "tensorboard")

    def write(self, step: int, metrics: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        prefix = "" if kind == "train" else f"{kind}/"
        if self.wandb is not None:
            self.wandb.log({prefix + k: v for k, v in metrics.items()}, step=step)
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, {prefix + k: v for k, v in metrics.items()})

    def write_kernels(self, step: int, choices: dict[str, str]) -> None:
        """Which implementation each fused op took (`higgs_ds.ops.kernel_choices`): a "kernels" record in
        metrics.jsonl and the `kernels` entry of the wandb config."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": "kernels", **choices}, ensure_ascii=False) + "\n")
        if self.wandb is not None:
            self.wandb.config.update({"kernels": choices}, allow_val_change=True)

    def write_media(self, step: int, audio: dict | None = None, images: dict | None = None) -> None:
        """`audio`: tag -> (waveform, sample rate); `images`: tag -> PNG path."""
        audio, images = audio or {}, images or {}
        if self.wandb is not None:
            import wandb

            self.wandb.log({**{tag: wandb.Audio(w, sample_rate=sr, caption=tag) for tag, (w, sr) in audio.items()},
                            **{tag: wandb.Image(str(p)) for tag, p in images.items()}}, step=step)
        if self.tensorboard is not None:
            self.tensorboard.media(step, audio, images)

    def write_predictions(self, step: int, report: dict) -> None:
        if self.tensorboard is not None:
            self.tensorboard.predictions(step, report)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


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
        if key in train[-1]:  # dpo / grpo runs log only `loss`
            ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o--", label="eval loss")
    ax.set_xlabel("step")
    sft = "loss/audio" in train[-1]
    ax.set_ylabel("cross-entropy (nats)" if sft else "loss")
    ax.set_yscale("log" if sft else "linear")  # a GRPO loss can be negative
    ax.grid(alpha=0.3)
    ax.legend()
    out = run_dir / "loss_curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
