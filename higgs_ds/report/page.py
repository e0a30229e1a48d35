"""runs/<run>/report.html: one page to look at and listen to a run, readable with any browser, offline.

Media files the run already holds (wavs, spectrograms) are linked by paths relative to the run directory,
so the page stays small however many evals a run has and works wherever the run folder is copied; the
curves, which have no file of their own, are embedded as a data URI. Right-to-left text gets `dir`
attributes and an Arabic-capable font stack.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from higgs_ds.output_guard import OutputKind
from higgs_ds.report.charts import curves_png, rewards_png
from higgs_ds.report.run_files import LISTENING_ROWS, EvalSet, RunFiles, read_run, reward_keys

REPORT = "report.html"
REPORT_OUTPUT = OutputKind("report", adds=REPORT)  # the one file it writes into the run: nothing else there

_CSS = """
body { font-family: system-ui, "Noto Sans", "DejaVu Sans", sans-serif; margin: 1.5em auto; max-width: 1250px;
       color: #222; padding: 0 1em; }
.ar, [lang=ar] { font-family: "Noto Naskh Arabic", "Noto Sans Arabic", "Amiri", "Geeza Pro", "Segoe UI",
       Tahoma, "DejaVu Sans", sans-serif; font-size: 1.15em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; vertical-align: middle; font-size: 0.9em; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.reference td { background: #f3f8ff; }
p.prompt { max-width: 900px; background: #fafafa; border: 1px solid #eee; padding: 4px 10px; margin: 0.3em 0; }
img.spec { width: 300px; display: block; }
img.curves { width: 100%; }
audio { width: 230px; }
.muted { color: #777; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
code, pre { font-size: 0.85em; }
"""


def _link(run_dir: Path, path: Path) -> str:
    return quote(Path(os.path.relpath(path, run_dir)).as_posix())


def _cell(text: str) -> str:
    """Text of unknown direction (detokenized model output): the browser picks it from the first letter."""
    return f'<td dir="auto" class="ar">{escape(text)}</td>'


def _arabic(text: str) -> str:
    return f'<p dir="rtl" lang="ar" class="ar prompt">{escape(text)}</p>'


def _config_section(run: RunFiles) -> str:
    cfg = run.config
    if not cfg:
        return "<p class='muted'>no config.json yet</p>"
    model, data, optim = cfg.get("model", {}), cfg.get("data", {}), cfg.get("optim", {})
    stream = data.get("stream", {})
    rows = {"steps": cfg.get("steps"), "run dir": cfg.get("run_dir"),
            "model": model.get("init") or f"fresh: hidden {model.get('hidden_size')}, "
                                          f"{model.get('num_hidden_layers')} layers",
            "data": f"{data.get('shards')} (eval {data.get('eval_shards')})",
            "batch": f"{stream.get('max_tokens')} tokens, at most {stream.get('max_batch_size')} samples; "
                     f"grad_accum {cfg.get('grad_accum')}",
            "optimizer": f"lr {optim.get('lr')}, warmup {optim.get('warmup_steps')}, weight decay "
                         f"{optim.get('weight_decay')}",
            "precision": cfg.get("precision"), "LoRA": cfg.get("lora", {}).get("enabled"),
            "listening eval": f"every {cfg.get('audio_eval', {}).get('every')} steps",
            "loggers": ", ".join(cfg.get("loggers", [])) or None}
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows.items() if v is not None)
    full = escape(json.dumps(cfg, indent=2, ensure_ascii=False))
    return f"<table>{body}</table><details><summary>full config.json</summary><pre>{full}</pre></details>"


def _embedded(png: bytes, alt: str) -> str:
    return f'<img class="curves" alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _audio(run: RunFiles, wav: Path, missing: str) -> str:
    return (f'<audio controls preload="metadata" src="{_link(run.run_dir, wav)}"></audio>' if wav.is_file()
            else f"<span class='muted'>{missing}</span>")


def _curves_section(run: RunFiles) -> str:
    png = curves_png(run)
    return _embedded(png, "loss curves") if png else "<p class='muted'>no metrics yet</p>"


def _rewards_section(run: RunFiles) -> str:
    """GRPO: the rewards chart, and the kept samples (audio when a reward decoded it, text, rewards)."""
    png = rewards_png(run)
    chart = _embedded(png, "reward curves") if png else "<p class='muted'>no reward logged yet</p>"
    rows = []
    for sample in reversed(run.grpo_samples):  # newest first
        audio = _audio(run, sample.wav, "no audio: no reward decodes it")
        scores = ", ".join(f"{escape(k)} {'-' if v is None else f'{v:.3f}'}" for k, v in sample.scores.items())
        reward = "-" if sample.reward is None else f"{sample.reward:.3f}"
        rows.append(f"<tr><td class=num>{sample.step}</td><td>{audio}</td>{_cell(sample.text)}"
                    f"<td class=num>{sample.frames if sample.frames is not None else '-'}</td>"
                    f"<td class=num>{reward}</td><td>{scores}</td></tr>")
    table = ("<p>The first sample of the step at each log line (the newest are kept):</p><table><tr><th>step</th>"
             "<th>audio</th><th>prompt text</th><th>frames</th><th>reward</th><th>components</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    return chart + table


def _listening_table(run: RunFiles) -> str:
    if not run.audio_eval:
        return "<p class='muted'>no listening eval yet</p>"
    first_step, last_step = min(run.audio_eval), max(run.audio_eval)
    first, last = run.audio_eval[first_step], run.audio_eval[last_step]
    rows = []
    for eval_set in run.eval_sets or []:
        present = [(label, eval_set.prefix + key, fmt) for label, key, fmt in LISTENING_ROWS
                   if eval_set.prefix + key in last]
        if present:
            rows.append(f"<tr><th colspan=3>{escape(eval_set.heading)}</th></tr>")
        for label, key, fmt in present:
            before = fmt.format(first[key]) if key in first else "-"
            rows.append(f"<tr><td>{escape(label)}</td><td class=num>{before}</td>"
                        f"<td class=num>{fmt.format(last[key])}</td></tr>")
    return (f"<table><tr><th>metric</th><th>step {first_step}</th><th>step {last_step}</th></tr>"
            + "".join(rows) + "</table>")


def _media_cells(run: RunFiles, wav: Path, png: Path) -> str:
    audio = _audio(run, wav, "not written yet")
    image = f'<img class="spec" alt="spectrogram" src="{_link(run.run_dir, png)}">' if png.is_file() else ""
    return f"<td>{audio}</td><td>{image}</td>"


def _prompt_rows(run: RunFiles, eval_set: EvalSet) -> str:
    parts = []
    for prompt in eval_set.prompts:
        speaker = f" · speaker {escape(str(prompt.speaker))}" if prompt.speaker else ""
        rows = []
        for step in eval_set.steps:
            codes = eval_set.prompt_metrics(step, prompt.id)
            scores = run.audio_eval.get(step, {})
            tf = scores.get(eval_set.prefix + "tf/acc_audio")
            metrics = "<br>".join(
                [f"length ratio {codes['length_ratio']:.2f}", f"frame acc {codes['frame_acc']:.3f}",
                 f"cb0 acc {codes['cb0_acc']:.3f}"] if codes else ["<span class='muted'>codes not written yet</span>"])
            if tf is not None:
                metrics += f"<br><span class='muted'>all prompts: teacher-forced acc {tf:.3f}</span>"
            media = _media_cells(run, *(eval_set.generated(step, prompt.id, suffix) for suffix in (".wav", ".png")))
            rows.append(f"<tr><td class=num>{step}</td>{media}<td>{metrics}</td></tr>")
        media = _media_cells(run, *(eval_set.reference(prompt.id, suffix) for suffix in (".wav", ".png")))
        rows.append(f"<tr class=reference><td>target</td>{media}<td>the reference, decoded from its codes</td></tr>")
        parts.append(f"<h3>{escape(prompt.id)}<span class=muted>{speaker}</span></h3>"
                     + (_arabic(prompt.text) if prompt.text else "")
                     + "<table><tr><th>step</th><th>audio</th><th>spectrogram</th><th>this prompt</th></tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def _predictions_section(run: RunFiles) -> str:
    r = run.prediction
    if r is None:
        return "<p class='muted'>no prediction report yet</p>"
    tokens = "".join(f"<tr>{_cell(p)}{_cell(t)}<td>{'' if p == t else 'x'}</td></tr>"
                     for p, t in r.get("text_tokens", []))
    cb0 = escape("".join(r.get("audio_cb0_diff", [])))
    acc = ", ".join(f"cb{k} {a:.3f}" for k, a in enumerate(r.get("audio_acc_per_codebook", [])))
    return (f"<p>step {r.get('step')}: position t predicts t+1.</p>"
            f"<p>sample text (the whole prompt, detokenized):</p>"
            f"<p dir=\"auto\" class=\"ar prompt\">{escape(' '.join(r.get('prompt', '').split()))}</p>"
            f"<table><tr><th>text predicted</th>{_cell(r.get('text_pred', ''))}</tr>"
            f"<tr><th>text target</th>{_cell(r.get('text_target', ''))}</tr>"
            f"<tr><th>text labels</th><td>{r.get('text_unmasked')} trained, {r.get('text_masked')} masked</td></tr>"
            f"<tr><th>audio cb0 (x = miss)</th><td><code>{cb0}</code></td></tr>"
            f"<tr><th>audio labels</th><td>{r.get('audio_unmasked')} trained, {r.get('audio_masked')} masked</td></tr>"
            f"<tr><th>audio accuracy per codebook</th><td>{escape(acc)}</td></tr></table>"
            "<details><summary>first text tokens, predicted vs target</summary>"
            f"<table><tr><th>predicted</th><th>target</th><th>miss</th></tr>{tokens}</table></details>")


def render_report(run_dir: str | Path) -> str:
    run = read_run(run_dir)
    name = run.run_dir.resolve().name
    steps = run.config.get("steps")
    status = f"step {run.last_step}" + (f" of {steps}" if steps else "")
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    listening = "".join(f"<h3>{escape(s.heading)}</h3>{_prompt_rows(run, s)}" for s in run.eval_sets)
    grpo = run.config.get("objective") == "grpo" or run.grpo_samples or reward_keys(run.train)
    rewards = f"<h2>Rewards</h2>{_rewards_section(run)}" if grpo else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(name)}: run report</title>'
            f"<style>{_CSS}</style></head><body>"
            f"<h1>{escape(name)}</h1><p class=muted>{status} · report written {written}</p>"
            f"<h2>Config</h2>{_config_section(run)}"
            f"<h2>Loss curves</h2>{_curves_section(run)}"
            f"{rewards}"
            f"<h2>Listening eval: first vs last</h2>{_listening_table(run)}"
            f"<h2>Listening prompts</h2>{listening or '<p class=muted>no listening eval yet</p>'}"
            f"<h2>Latest predictions</h2>{_predictions_section(run)}"
            "</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Render and write <run_dir>/report.html (atomically: a browser reloading it never sees half a page)."""
    out = REPORT_OUTPUT.check_file(Path(run_dir) / REPORT, inputs=(run_dir,), where="run_dir")
    html = render_report(run_dir)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
