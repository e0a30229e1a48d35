"""The report's curves as one PNG: losses (train and eval), audio loss per codebook, listening eval."""

from __future__ import annotations

import io

from higgs_ds.report.run_files import RunFiles


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [s for s, _ in points], [v for _, v in points]


def _plot(ax, records: list[dict], key: str, label: str, style: str = "-") -> bool:
    steps, values = _series(records, key)
    if steps:
        ax.plot(steps, values, style, label=label, markersize=4)
    return bool(steps)


def curves_png(run: RunFiles) -> bytes | None:
    """PNG bytes of three panels, or None before the first metric line."""
    if not run.train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (losses, codebooks, listening) = plt.subplots(1, 3, figsize=(14, 3.8))
    for key in ("loss", "loss/text", "loss/audio"):
        _plot(losses, run.train, key, key)
        _plot(losses, run.eval, key, f"eval {key}", "o--")
    losses.set_title("cross-entropy (nats)", fontsize=10)
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
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2 if ax is codebooks else 1)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()
