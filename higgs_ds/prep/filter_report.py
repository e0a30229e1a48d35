"""The filter's report: a table per metric and a histogram with its threshold marked, so a person
sees what a threshold drops before dropping it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _histogram(values: np.ndarray, metric: str, rule: str, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    ax.hist(values, bins=min(40, max(5, len(values) // 2)), color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"{rule} {threshold:g}")
    ax.set_xlabel(metric)
    ax.set_ylabel("utterances")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(rows: list[dict], rejects: list[dict], rules: dict[str, tuple[str, float]], out: Path,
                 summary: dict) -> dict[str, int]:
    """Writes filter_report.md and report/<metric>.png; returns rejected rows per metric."""
    (out / "report").mkdir(exist_ok=True)
    per_metric = {metric.removesuffix("_max"): 0 for metric in rules}
    for reject in rejects:
        for failed in reject["failed"]:
            per_metric[failed["metric"]] += 1
    lines = ["# Quality filter report", "",
             f"{summary['measured']} utterances measured, {summary['rejected']} rejected, {summary['kept']} kept"
             f"{' (dry run: nothing written but this report)' if summary['dry_run'] else ''}; "
             f"{summary['too_long']} over --max-seconds {rules['seconds_max'][1]:g} refused from their headers "
             f"(never decoded), {summary['unreadable']} unreadable lines, {summary['not_measured_codes_only']} "
             "codes-only rows kept unmeasured.", "",
             "| metric | rule | threshold | rejected | min | median | max | histogram |",
             "|---|---|---|---|---|---|---|---|"]
    for metric, (rule, threshold) in rules.items():
        name = metric.removesuffix("_max")
        values = np.array([row[metric] for row in rows], dtype=float)
        image = f"report/{metric}.png"
        if len(values):
            _histogram(values, name, rule, threshold, out / image)
            stats = f"{values.min():.3g} | {np.median(values):.3g} | {values.max():.3g} | ![{metric}]({image})"
        else:
            stats = "- | - | - | -"
        lines.append(f"| {name} | {rule} | {threshold:g} | {per_metric[name]} | {stats} |")
    (out / "filter_report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return per_metric
