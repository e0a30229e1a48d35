"""The playground's page (gradio), kept thin: every handler calls `Playground` and turns a `UserError` into
the one `error: ...` line the command lines print, shown in the page; the server keeps serving.

Nothing here opens a path the page names: the checkpoint and the speaker are picked from lists the server
made, and an upload is the file gradio received (read by `inputs.read_reference`, size-checked, from a copy).
"""

from __future__ import annotations

import logging

import numpy as np

from higgs_ds.errors import CheckpointError, UserError, one_line
from higgs_ds.playground.inputs import Sampling
from higgs_ds.playground.session import SPEAKER, UPLOAD, ZERO_SHOT, Generation, Playground, Request

log = logging.getLogger(__name__)
VOICE_CHOICES = [("zero-shot (no reference)", ZERO_SHOT), ("a speaker of the eval shards", SPEAKER),
                 ("upload or record a clip", UPLOAD)]
CSS = "#status p {font-family: monospace; white-space: pre-wrap}"
DELETE_CACHE = (3600, 3600)  # (how often, how old) in seconds: gradio's cached uploads older than 1 h are removed


def no_complete_tag(pg: Playground) -> CheckpointError:
    """What the page says when the run has no complete checkpoint tag (all removed while it was open)."""
    return CheckpointError("the run has no complete checkpoint tag now", where=str(pg.ckpt_dir),
                           fix="wait for a checkpoint to finish saving (or restore one), then reload the page")


def error_line(exc: BaseException) -> str:
    """What the page shows for a failure: a user error's line, or a bug named as such (traceback in the log)."""
    if isinstance(exc, UserError):
        return f"error: {one_line(exc)}"
    log.exception("playground: unexpected failure")
    return f"error: unexpected {type(exc).__name__}: {one_line(exc)} (a bug: the server log has the traceback)"


def _details(gen: Generation) -> str:
    rows = [f"**{gen.tag}** · {gen.frames} frames · {gen.duration_s:.2f} s · {gen.sample_rate} Hz · "
            f"{'ended by the model' if gen.finished else 'stopped by the ' + gen.stopped_by} · "
            f"generated in {gen.seconds:.1f} s", f"saved: `{gen.folder.name}`"]
    if gen.scores:
        rows.append(" · ".join(f"{k} {v:.3f}" for k, v in sorted(gen.scores.items())))
    rows += [f"{name} score failed: {why} (the server log has the traceback)"
             for name, why in sorted(gen.score_errors.items())]
    return "\n\n".join(rows)


def _outputs(gen: Generation | None) -> tuple:
    if gen is None:
        return None, None, ""
    from PIL import Image

    with Image.open(gen.folder / "spectrogram.png") as image:
        picture = image.convert("RGB")
    pcm = (np.clip(gen.wav, -1, 1) * 32767).astype(np.int16)  # as the saved wav (16-bit PCM)
    return (gen.sample_rate, pcm), picture, _details(gen)


def build_app(pg: Playground):
    """The gradio Blocks of one playground (call `.queue(...).launch(...)` on it, as launch/playground.py does)."""
    import gradio as gr

    tags, voices = pg.tags(), pg.voices()
    default = pg.default_tag()

    def request(text, tag, voice, speaker, upload, ref_text, greedy, temperature, top_k, top_p, seed, frames):
        sampling = Sampling(bool(greedy), float(temperature), int(top_k), float(top_p), int(seed), int(frames))
        return Request(text or "", tag, voice, speaker, upload, ref_text, sampling)

    def normalise(text, tag):
        try:
            return pg.normalise(text, tag) if (text or "").strip() else ""
        except Exception as exc:  # noqa: BLE001 (every failure is shown, none stops the server)
            return error_line(exc)

    def run(tags_wanted, *fields):
        outs = []
        try:
            for tag in tags_wanted:
                outs.append(pg.generate(request(fields[0], tag, *fields[1:])))
            status = "\n".join(g.summary() for g in outs)
            normalised = outs[0].normalised
        except Exception as exc:  # noqa: BLE001
            status, normalised, outs = error_line(exc), "", []
        a = _outputs(outs[0] if outs else None)
        b = _outputs(outs[1] if len(outs) > 1 else None)
        return (status, normalised, *a, *b)

    def generate_one(text, tag, tag_b, *rest):
        return run([tag], text, *rest)

    def generate_ab(text, tag, tag_b, *rest):
        return run([tag, tag_b], text, *rest)

    def load(tag):
        try:
            loaded = pg.load(tag)
            n = sum(p.numel() for p in loaded.model.parameters())
            lora = " (LoRA adapters merged)" if pg.run is not None and pg.run.uses_lora else ""
            return f"loaded {tag}: {loaded.family.name}, {n / 1e6:.2f}M parameters{lora}"
        except Exception as exc:  # noqa: BLE001
            return error_line(exc)

    # gradio's cache holds every uploaded or recorded clip: removed an hour after it arrived (checked hourly)
    with gr.Blocks(title="higgs-ds playground", analytics_enabled=False, delete_cache=DELETE_CACHE) as app:
        gr.Markdown(f"## higgs-ds playground · `{pg.source}`\nSaved to `{pg.store.folder}` (newest "
                    f"{pg.store.keep} kept) · time limit {pg.cfg.time_limit_s:g} s · frame limit "
                    f"{pg.cfg.frame_limit}")
        with gr.Row():
            tag = gr.Radio(tags, value=default, label="checkpoint (A)", elem_id="tag")
            tag_b = gr.Radio(tags, value=tags[0] if tags else default, label="checkpoint B (for A/B)",
                             elem_id="tag_b")
        text = gr.Textbox(label="text", lines=3, rtl=True, elem_id="text", placeholder="اكتب جملة هنا")
        normalised = gr.Textbox(label="normalised text (what the model reads)", rtl=True, interactive=False,
                                elem_id="normalised")
        with gr.Row():
            voice = gr.Radio(VOICE_CHOICES, value=SPEAKER if voices else ZERO_SHOT, label="reference voice",
                             elem_id="voice")
            speaker = gr.Dropdown(voices, value=voices[0] if voices else None, label="speaker (eval shards)",
                                  elem_id="speaker")
        with gr.Row():
            upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label="reference clip",
                              elem_id="upload")
            ref_text = gr.Textbox(label="its transcript", rtl=True, elem_id="ref_text")
        with gr.Accordion("sampling", open=False), gr.Row():
            greedy = gr.Checkbox(True, label="greedy (argmax, deterministic)", elem_id="greedy")
            temperature = gr.Slider(0.05, 2.0, 1.0, step=0.05, label="temperature")
            top_k = gr.Slider(0, 200, 50, step=1, label="top-k (0: off)")
            top_p = gr.Slider(0.05, 1.0, 0.95, step=0.01, label="top-p (1: off)")
            seed = gr.Number(0, precision=0, label="seed")
            frames = gr.Slider(1, pg.cfg.frame_limit, min(750, pg.cfg.frame_limit), step=1,
                               label="maximum length (frames, 25 = 1 s)", elem_id="frames")
        with gr.Row():
            go = gr.Button("generate", variant="primary", elem_id="generate")
            ab = gr.Button("A/B: both checkpoints", elem_id="generate_ab")
        status = gr.Markdown(elem_id="status")
        columns = []
        with gr.Row():
            for side in ("a", "b"):
                with gr.Column():
                    columns += [gr.Audio(type="numpy", format="wav", interactive=False, buttons=["download"],
                                         label=f"output {side.upper()}", elem_id=f"audio_{side}"),
                                gr.Image(type="pil", interactive=False, label="spectrogram", elem_id=f"spec_{side}",
                                         buttons=["download", "fullscreen"]),
                                gr.Markdown(elem_id=f"info_{side}")]
        fields = [text, tag, tag_b, voice, speaker, upload, ref_text, greedy, temperature, top_k, top_p, seed, frames]
        outputs = [status, normalised, *columns]
        # a page (re)load lists the tags the run has now: a run still training adds some, a rotation removes some
        def listed():
            now = pg.tags()
            if not now:  # every tag removed (or none complete yet): the page says so instead of failing
                return (gr.Radio(choices=[], value=None), gr.Radio(choices=[], value=None),
                        error_line(no_complete_tag(pg)))
            return gr.Radio(choices=now, value=pg.default_tag()), gr.Radio(choices=now, value=now[0]), ""

        app.load(listed, None, [tag, tag_b, status], queue=False)
        text.change(normalise, [text, tag], normalised, trigger_mode="always_last", queue=False)
        tag.change(load, tag, status)
        go.click(generate_one, fields, outputs, concurrency_id="generate")
        ab.click(generate_ab, fields, outputs, concurrency_id="generate")
    return app
