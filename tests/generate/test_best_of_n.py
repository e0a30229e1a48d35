"""Best-of-N generation: `launch/generate.py --candidates N --select ...` samples N candidates with distinct,
recorded seeds, keeps the one with the highest weighted reward, writes every candidate's scores beside the
wav, and the kept candidate is exactly what a plain generation with its seed writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from higgs_ds.data.text import normalize_for_eval
from launch import generate as generate_cli

SAMPLING = ["--temperature", "2.0", "--top-k", "0", "--top-p", "1", "--max-new-frames", "12"]


def loudness(samples):
    """A plug-in reward reading decoded audio: RMS of the waveform (the demo codec's output is noise)."""
    return [float(np.sqrt(np.mean(s.audio ** 2))) if len(s.audio) else 0.0 for s in samples]


def test_best_of_n_keeps_the_best_candidate_and_writes_every_score(overfit, exported, tmp_path):
    ckpt, _ = exported
    text = overfit.utterances[0].text
    weights = {"duration": 1.0, "stop": 0.5, f"{__name__}:loudness": 2.0}
    out = tmp_path / "best" / "speech.wav"
    select = ",".join(f"{k}={v}" for k, v in weights.items())
    generate_cli.main([str(ckpt), "--text", text, "--out", str(out), "--seed", "5", "--candidates", "4",
                       "--select", select, "--chars-per-second", "12", *SAMPLING])
    record = json.loads(out.with_suffix(".candidates.json").read_text())
    candidates = record["candidates"]
    assert [c["seed"] for c in candidates] == [5, 6, 7, 8] and record["select"] == weights
    totals = []
    for c in candidates:  # each total is the weighted mean of its scores, recomputed here
        assert set(c["scores"]) == set(weights)
        expected_duration = min(r := (c["frames"] / 25) / (len(normalize_for_eval(text).replace(" ", "")) / 12),
                                1 / r) if c["frames"] else 0.0
        assert c["scores"]["duration"] == pytest.approx(expected_duration)
        assert c["scores"]["stop"] == float(c["finished"])
        totals.append(sum(weights[k] * v for k, v in c["scores"].items()) / sum(weights.values()))
        assert c["total"] == pytest.approx(totals[-1])
    assert len(set(totals)) > 1  # the candidates differ, so the choice means something
    assert record["chosen"] == int(np.argmax(totals))
    # the kept candidate is what a plain generation with its seed writes
    plain = tmp_path / "plain" / "speech.wav"
    generate_cli.main([str(ckpt), "--text", text, "--out", str(plain), "--seed", str(5 + record["chosen"]),
                       *SAMPLING])
    assert np.array_equal(np.load(out.with_suffix(".npy")), np.load(plain.with_suffix(".npy")))
    assert candidates[record["chosen"]]["frames"] == np.load(plain.with_suffix(".npy")).shape[1]
