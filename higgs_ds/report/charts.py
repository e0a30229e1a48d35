"""The report's curves as PNGs: losses (train and eval), audio loss per codebook, listening eval; and for a
GRPO run its rewards (the mean of each component per logged step, with the std of the total)."""

from __future__ import annotations

import io

from higgs_ds.report.run_files import REWARD_PREFIX, RunFiles, reward_keys


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [s for s, _ in points], [v for _, v in points]


def _plot(ax, records: list[dict], key: str, label: str, style: str = "-") -> bool:
    steps, values = _series(records, key)
    if steps:
        ax.plot(steps, values, style, label=label, markersize=4)
    return bool(steps)


def _figure(panels: int, width: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, panels, figsize=(width, 3.8))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


def _finish_axes(ax, legend_columns: int = 1) -> None:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=legend_columns)


def curves_png(run: RunFiles) -> bytes | None:
    """PNG bytes of three panels, or None before the first metric line."""
    if not run.train:
        return None
    fig, (losses, codebooks, listening) = _figure(3, 14)
    for key in ("loss", "loss/text", "loss/audio"):
        _plot(losses, run.train, key, key)
        _plot(losses, run.eval, key, f"eval {key}", "o--")
    objective = run.config.get("objective", "sft")
    losses.set_title("cross-entropy (nats)" if objective == "sft" else f"{objective} loss", fontsize=10)
    if all(v > 0 for v in _series(run.train, "loss")[1]):  # a GRPO loss can be negative
        losses.set_yscale("log")
    codebook_keys = sorted((k for k in run.train[-1] if k.startswith("loss/audio_cb")), key=lambda k: int(k[13:]))
    for key in codebook_keys:
        _plot(codebooks, run.train, key, key.removeprefix("loss/audio_"))
    codebooks.set_title("audio loss per codebook (train)", fontsize=10)
    codebooks.set_yscale("log")
    audio_evals = list(run.audio_eval.values())
    plotted = False
    for prefix, name in (("", "held-out"), ("train/", "train")):
        for key in ("gen/frame_acc", "tf/acc_audio", "gen/length_ratio"):
            plotted |= _plot(listening, audio_evals, prefix + key, f"{name} {key}", "o-")
    listening.set_title("listening eval" if plotted else "listening eval (none yet)", fontsize=10)
    for ax in (losses, codebooks, listening):
        _finish_axes(ax, 2 if ax is codebooks else 1)
    return _png(fig)


def rewards_png(run: RunFiles) -> bytes | None:
    """PNG bytes of the rewards panel, or None for a run that logged no reward (sft, dpo)."""
    keys = reward_keys(run.train)
    if not keys:
        return None
    fig, ax = _figure(1, 8)
    for key in keys:
        _plot(ax, run.train, key, key.removeprefix(REWARD_PREFIX), "o-" if len(run.train) < 30 else "-")
    steps, std = _series(run.train, REWARD_PREFIX + "total_std")
    total = dict(zip(*_series(run.train, REWARD_PREFIX + "total"), strict=True))
    if steps and all(s in total for s in steps):
        mean = [total[s] for s in steps]
        ax.fill_between(steps, [m - d for m, d in zip(mean, std, strict=True)],
                        [m + d for m, d in zip(mean, std, strict=True)], alpha=0.15, label="total ± std")
    ax.set_title("rewards: mean per step (GRPO samples)", fontsize=10)
    _finish_axes(ax)
    return _png(fig)
