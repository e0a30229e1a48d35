"""Diarization on synthetic conversations (espeak-ng voices, `tests/prep/conversation.py`): diarization
error rate, purity and throughput of `segment --speakers diarize` on one CPU thread, and what the
released Demucs architecture costs per hour of audio. docs/data.md ("Many speakers") quotes the figures.
Runs only with `pytest --benchmark`.

DER is pyannote.metrics' when it is installed, else computed here the same way (NIST md-eval's
definition): on 10 ms frames, (missed + false alarm + confused speaker-frames) / reference speaker-frames,
two reference speakers counted twice where they overlap, found speakers mapped one-to-one to true ones to
maximise agreement (Hungarian), with no collar and with a 0.25 s collar around every reference turn edge.
Speech the diarizer drops on purpose (overlap, doubt, short turns) counts as missed.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from higgs_ds.prep.segment import SegmentConfig, segment_recordings
from tests.prep.conversation import write_conversation
from tests.prep.test_diarize import purity

pytestmark = [pytest.mark.benchmark,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")]
FRAME = 0.01
ORDERS = ["ABCABCBACBCA", "CABACBABCACB", "BCABACBCABAC", "ACBCABCBACAB", "BACBCACABCBA", "CBACABABCBCA"]


def der(turns: list[tuple[float, float, str]], found: list[tuple[float, float, str]], seconds: float,
        collar: float = 0.0) -> dict[str, float]:
    frames = int(np.ceil(seconds / FRAME))
    voices, speakers = sorted({v for *_, v in turns}), sorted({s for *_, s in found})
    ref = np.zeros((frames, len(voices)), bool)
    hyp = np.zeros((frames, max(len(speakers), 1)), bool)
    scored = np.ones(frames, bool)
    for start, end, voice in turns:
        ref[int(start / FRAME):int(end / FRAME), voices.index(voice)] = True
        for edge in (start, end):
            scored[max(int((edge - collar) / FRAME), 0):int((edge + collar) / FRAME)] = False
    for start, end, speaker in found:
        hyp[int(start / FRAME):int(end / FRAME), speakers.index(speaker)] = True
    ref, hyp = ref[scored], hyp[scored]
    rows, cols = linear_sum_assignment(-(hyp.T.astype(float) @ ref.astype(float)))
    correct = sum((hyp[:, r] & ref[:, c]).sum() for r, c in zip(rows, cols, strict=True))
    n_ref, n_hyp = ref.sum(1), hyp.sum(1)
    missed = np.maximum(n_ref - n_hyp, 0).sum()
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum()
    confusion = np.minimum(n_ref, n_hyp).sum() - correct
    total = n_ref.sum()
    return {"der": (missed + false_alarm + confusion) / total, "missed": missed / total,
            "false_alarm": false_alarm / total, "confusion": confusion / total}


def test_diarization_error_rate_purity_and_throughput(request, tmp_path):
    import torch

    torch.set_num_threads(1)  # one CPU worker
    talks = [write_conversation(tmp_path / f"talk{i}.wav", order, seed=i, overlap_at=7)
             for i, order in enumerate(ORDERS)]
    audio_seconds = sum(t.seconds for t in talks)
    segment_recordings(SegmentConfig(inputs=(str(talks[0].path),), out=str(tmp_path / "warm"), speakers="diarize"))
    timings = {}
    for mode in ("file", "diarize"):
        start = time.perf_counter()
        segment_recordings(SegmentConfig(inputs=tuple(str(t.path) for t in talks), out=str(tmp_path / mode),
                                         speakers=mode))
        timings[mode] = time.perf_counter() - start
    rows = [json.loads(line) for line in (tmp_path / "diarize" / "segments.jsonl").read_text().splitlines()]
    scores, purities, found = [], [], []
    for talk in talks:
        kept = [r for r in rows if r["kept"] and r["source"] == str(talk.path)]
        found.append(len({r["speaker"] for r in kept}))
        purities.append(purity(kept, talk.turns, talk.overlap)[0])
        hyp = [(r["start"], r["end"], r["speaker"]) for r in kept]
        scores.append({c: der(talk.turns, hyp, talk.seconds, c) for c in (0.0, 0.25)})
    mean = {c: {k: float(np.mean([s[c][k] for s in scores])) for k in scores[0][c]} for c in (0.0, 0.25)}
    lines = [f"### diarization, {len(talks)} conversations, {audio_seconds / 60:.1f} min, 3 voices, one overlap each",
             "", f"speakers found per conversation: {found}; purity mean {np.mean(purities):.3f}, "
             f"min {np.min(purities):.3f}", "",
             "| collar | DER | missed | false alarm | confusion |", "|---|---|---|---|---|"]
    lines += [f"| {c:.2f} s | {m['der']:.3f} | {m['missed']:.3f} | {m['false_alarm']:.3f} | {m['confusion']:.3f} |"
              for c, m in mean.items()]
    lines += ["", "| one CPU thread | wall (s) | hours of audio per hour |", "|---|---|---|"]
    lines += [f"| {mode} | {t:.1f} | {audio_seconds / t:.0f} |" for mode, t in timings.items()]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    (reporter.write_line if reporter else print)("\n" + "\n".join(lines) + "\n")
    assert found == [3] * len(talks) and min(purities) >= 0.9


def test_demucs_cost_per_hour_of_audio(request):
    """The released htdemucs architecture (HTDemucs' defaults: 48 channels, depth 4, a 5-layer cross-domain
    transformer, 44.1 kHz stereo) with random weights: the same computation as the trained model."""
    pytest.importorskip("demucs")
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()
    seconds, lines = 30, []
    wav = torch.randn(1, 2, seconds * model.samplerate) * 0.1
    for threads in (1, 2):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        with torch.no_grad():
            apply_model(model, wav, progress=False, num_workers=0)
        wall = time.perf_counter() - start
        lines.append(f"| {threads} | {wall:.1f} | {wall / seconds:.2f} | {seconds / wall:.2f} |")
    lines = [f"### htdemucs on {seconds} s of 44.1 kHz stereo (CPU)", "",
             "| threads | wall (s) | seconds per second of audio | hours of audio per hour |", "|---|---|---|---|",
             *lines]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    (reporter.write_line if reporter else print)("\n" + "\n".join(lines) + "\n")
