"""`prepare_data import --from lhotse`: a CutSet / RecordingSet + SupervisionSet written by lhotse itself
comes back as manifest rows with the same ids, texts, speakers and audio samples; bad rows are rejected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from higgs_ds.data.importers import ImportConfig, import_corpus

lhotse = pytest.importorskip("lhotse")

RATE = 16000


def _wav(path: Path, seconds: float, seed: int) -> np.ndarray:
    samples = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)
    soundfile.write(path, samples, RATE, subtype="FLOAT")
    return samples


def _corpus(folder: Path) -> tuple[dict[str, np.ndarray], object, object]:
    """Two short single-utterance files and one long recording with two utterances inside it, plus three
    bad supervisions (no text, past the end of its recording, of a recording that does not exist)."""
    folder.mkdir(parents=True)
    audio = {name: _wav(folder / f"{name}.wav", seconds, seed)
             for seed, (name, seconds) in enumerate((("short1", 1.0), ("short2", 0.5), ("long", 6.0)))}
    recordings = lhotse.RecordingSet.from_recordings(
        lhotse.Recording.from_file(folder / f"{name}.wav", recording_id=name) for name in audio)
    sup = lhotse.SupervisionSegment
    supervisions = lhotse.SupervisionSet.from_segments([
        sup("s1", "short1", 0.0, 1.0, text="جملة أولى", speaker="spk1"),
        sup("s2", "short2", 0.0, 0.5, text="جملة ثانية", speaker="spk2"),
        sup("l1", "long", 0.5, 1.25, text="داخل تسجيل طويل", speaker="spk1"),
        sup("l2", "long", 3.0, 2.0, text="جملة أخرى", speaker="spk3"),
        sup("silent", "long", 2.0, 0.5, text="", speaker="spk3"),
        sup("past_end", "long", 5.5, 2.0, text="بعد النهاية", speaker="spk3"),
        sup("orphan", "nowhere", 0.0, 1.0, text="لا تسجيل", speaker="spk3"),
    ])
    return audio, recordings, supervisions


def _expected(audio: dict[str, np.ndarray]) -> dict[str, tuple[str, str, np.ndarray]]:
    span = lambda name, start, dur: audio[name][int(start * RATE): int((start + dur) * RATE)]  # noqa: E731
    return {"s1": ("جملة أولى", "spk1", audio["short1"]), "s2": ("جملة ثانية", "spk2", audio["short2"]),
            "l1": ("داخل تسجيل طويل", "spk1", span("long", 0.5, 1.25)),
            "l2": ("جملة أخرى", "spk3", span("long", 3.0, 2.0))}


def _check_round_trip(out: Path, summary: dict, audio: dict[str, np.ndarray], corpus: Path) -> None:
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = _expected(audio)
    assert sorted(r["id"] for r in rows) == sorted(expected)
    for row in rows:
        text, speaker, samples = expected[row["id"]]
        assert (row["text"], row["speaker"]) == (text, speaker)
        path = Path(row["audio"]) if Path(row["audio"]).is_absolute() else out / row["audio"]
        got, rate = soundfile.read(path, dtype="float32")
        assert rate == RATE and np.allclose(got, samples, atol=1e-6), row["id"]
        if row["id"].startswith("s"):  # a whole file is referenced, not copied
            assert path == (corpus / f"{row['id'].replace('s', 'short')}.wav").resolve()
    rejects = {json.loads(line)["id"]: json.loads(line)["kind"]
               for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()}
    assert rejects == {"silent": "missing_text", "past_end": "span_outside_recording", "orphan": "missing_audio"}
    assert summary["read"] == 7 and summary["written"] == {"train": 4, "eval": 0} and summary["rejected"] == 3


def test_cutset_round_trips(tmp_path):
    audio, recordings, supervisions = _corpus(tmp_path / "corpus")
    # a CutSet keeps only supervisions whose recording exists: the orphan is reported by the other layout
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions.filter(
        lambda s: s.recording_id in recordings))
    cuts.to_file(tmp_path / "corpus" / "arabic_cuts_train.jsonl.gz")
    summary = import_corpus(ImportConfig(fmt="lhotse", src=str(tmp_path / "corpus" / "arabic_cuts_train.jsonl.gz"),
                                         out=str(tmp_path / "out"), progress=False))
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"]: r["kind"] for r in rejects} == {"silent": "missing_text", "past_end": "span_outside_recording"}
    assert all(r["where"].startswith("arabic_cuts_train.jsonl.gz:3 (") for r in rejects)  # the long recording
    assert summary["read"] == 6
    expected = _expected(audio)
    for row in rows:
        got, _ = soundfile.read(Path(row["audio"]) if Path(row["audio"]).is_absolute() else
                                tmp_path / "out" / row["audio"], dtype="float32")
        assert np.allclose(got, expected[row["id"]][2], atol=1e-6) and row["text"] == expected[row["id"]][0]


@pytest.mark.integration
def test_recordings_and_supervisions_folder_round_trips_through_the_cli(tmp_path):
    audio, recordings, supervisions = _corpus(tmp_path / "corpus")
    recordings.to_file(tmp_path / "corpus" / "arabic_recordings_train.jsonl.gz")
    supervisions.to_file(tmp_path / "corpus" / "arabic_supervisions_train.jsonl.gz")
    recordings.subset(first=1).to_file(tmp_path / "corpus" / "arabic_recordings_dev.jsonl.gz")
    proc = subprocess.run([sys.executable, "launch/prepare_data.py", "import", "--from", "lhotse", "--src",
                           str(tmp_path / "corpus"), "--split", "train", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2], timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_round_trip(tmp_path / "out", json.loads(proc.stdout), audio, tmp_path / "corpus")

    proc = subprocess.run([sys.executable, "launch/prepare_data.py", "import", "--from", "lhotse", "--src",
                           str(tmp_path / "corpus"), "--out", str(tmp_path / "out2")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2], timeout=300)
    assert proc.returncode == 2 and "several recordings manifests" in proc.stderr and "--split" in proc.stderr


@pytest.mark.integration
def test_lhotse_is_imported_only_by_its_importer():
    code = ("import sys, higgs_ds.data.importers, higgs_ds.data.builder; "
            "print('lhotse' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[2])
    assert proc.stdout.strip() == "False", proc.stderr
