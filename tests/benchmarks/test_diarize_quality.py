"""Diarization on synthetic conversations (espeak-ng voices, `tests/prep/conversation.py`): diarization
error rate, purity and throughput of `segment --speakers diarize` on one CPU thread, a 20-minute two-voice
file against a 30-second one (turns found, wall time, peak resident memory of a fresh process), and what
the released Demucs architecture costs per hour of audio. docs/data.md ("Many speakers") quotes the
figures. Runs only with `pytest --benchmark`.

DER is computed here (pyannote.metrics is not used), as NIST md-eval defines it: on 10 ms frames,
(missed + false alarm + confused speaker-frames) / reference speaker-frames, two reference speakers
counted twice where they overlap, found speakers mapped one-to-one to true ones to maximise agreement
(Hungarian), with no collar and with a 0.25 s collar around every reference turn edge.
Speech the diarizer drops on purpose (overlap, doubt, short turns) counts as missed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from scipy.optimize import linear_sum_assignment

from higgs_ds.prep.segment import SegmentConfig, segment_recordings
from tests.harness import REPO, checked, env
from tests.prep.conversation import RATE, SENTENCES, speak, write_conversation
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


# A fresh process segments one file on one thread and prints its wall time, its peak resident set (the
# whole process: interpreter, torch, the models and the run) and the summary.
SEGMENT_IN_A_PROCESS = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from higgs_ds.prep.segment import SegmentConfig, segment_recordings
start = time.perf_counter()
summary = segment_recordings(SegmentConfig(inputs=(sys.argv[1],), out=sys.argv[2], speakers="diarize"))
print(json.dumps({"seconds": time.perf_counter() - start, "summary": summary,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_alternating(path, seconds: int, every: float = 8.0) -> list[tuple[float, float, str]]:
    """Voices A and B taking turns, one sentence every `every` seconds, over faint noise, written a minute at
    a time; returns the turns (start, end, voice)."""
    clips = {voice: speak(SENTENCES[0], voice) for voice in "AB"}
    rng, turns = np.random.default_rng(0), []
    slots = [(round(k * every * RATE), "AB"[k % 2]) for k in range(int(seconds / every))]
    with soundfile.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
        for first in range(0, seconds * RATE, 60 * RATE):
            block = (rng.standard_normal(min(60 * RATE, seconds * RATE - first)) * 1e-3).astype(np.float32)
            for at, voice in slots:
                clip = clips[voice]
                if first <= at and at + len(clip) <= first + len(block):
                    block[at - first:at - first + len(clip)] += clip
                    turns.append((at / RATE, (at + len(clip)) / RATE, voice))
            f.write(block)
    return turns


def test_a_long_two_voice_file_costs_what_a_short_one_does_in_memory(request, tmp_path):
    peaks = []
    lines = ["### two voices alternating every 8 s, one CPU thread, a fresh process per file", "",
             "| file | turns | segments kept | speakers (segments each) | purity | dropped (s) | wall (s) | "
             "x real time | peak RSS (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, seconds in (("32 s", 32), ("20 min", 20 * 60)):
        path, out = tmp_path / f"{label.replace(' ', '')}.wav", tmp_path / f"out-{label.replace(' ', '')}"
        turns = write_alternating(path, seconds)
        done = checked(subprocess.run([sys.executable, "-c", SEGMENT_IN_A_PROCESS, str(path), str(out)], cwd=REPO,
                                      env=env(), capture_output=True, text=True, timeout=1800))
        result = json.loads(done.stdout.splitlines()[-1])
        kept = [r for r in map(json.loads, (out / "segments.jsonl").read_text().splitlines()) if r["kept"]]
        per_speaker = [sum(r["speaker"] == k for r in kept) for k in sorted({r["speaker"] for r in kept})]
        pure = purity(kept, turns, None)[0]
        dropped = {k: round(v, 1) for k, v in result["summary"]["dropped_seconds"].items() if v}
        assert len(per_speaker) == 2 and pure >= 0.9, (label, per_speaker, pure)
        peaks.append(result["peak_mib"])
        counts = ", ".join(map(str, per_speaker))
        lines.append(f"| {label} | {len(turns)} | {len(kept)} | {len(per_speaker)} ({counts}) | {pure:.3f} | {dropped} "
                     f"| {result['seconds']:.1f} | {seconds / result['seconds']:.0f} | {result['peak_mib']:.0f} |")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    (reporter.write_line if reporter else print)("\n" + "\n".join(lines) + "\n")
    assert peaks[1] < peaks[0] + 100  # memory does not grow with the file (the 20-min audio alone: 73 MiB)


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
