"""`prepare_data link-speakers` over two diarized segment parts: the voices that recur across the two
recordings get one id each, references are paired within linked speakers only, and the manifest it writes
reads back through the manifest parser; prepare.sbatch runs segment parts and the link step."""

import json
import os
import shutil
import stat
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from higgs_ds.data.manifest import read_manifest
from higgs_ds.errors import DataError
from higgs_ds.prep.link_speakers import LinkConfig, histogram, link_speakers
from tests.prep.test_diarize import _overlap

REPO = Path(__file__).parents[2]


def _voice_of(speaker_rows, talk):
    """file speaker label -> the voice that speaks most of its kept time."""
    seconds = defaultdict(lambda: defaultdict(float))
    for row in speaker_rows:
        for start, end, voice in talk.turns:
            seconds[row["speaker"]][voice] += _overlap((row["start"], row["end"]), (start, end))
    return {label: max(by_voice, key=by_voice.get) for label, by_voice in seconds.items()}


def test_a_recurring_speaker_gets_one_id_and_references_stay_within_speakers(conversations, diarized, tmp_path):
    _, first_talk, second_talk = conversations
    parts, _ = diarized
    summary = link_speakers(LinkConfig(segment_dirs=tuple(map(str, parts)), out=str(tmp_path / "linked")))
    rows = [json.loads(line) for line in (tmp_path / "linked" / "manifest.jsonl").read_text().splitlines()]
    voice = {}
    for part, talk in zip(parts, (first_talk, second_talk), strict=True):
        kept = [json.loads(line) for line in (part / "segments.jsonl").read_text().splitlines()]
        voice |= _voice_of([r for r in kept if r["kept"]], talk)
    linked_voice = defaultdict(set)
    for row in rows:
        linked_voice[row["speaker"]].add(voice[row["file_speaker"]])
    assert all(len(v) == 1 for v in linked_voice.values()), linked_voice  # no linked speaker mixes voices
    ids = {v.pop(): k for k, v in linked_voice.items()}
    assert sorted(ids) == ["A", "B", "C"] and summary["speakers"] == 3 and summary["file_speakers"] == 5
    files_of_a = {r["file_speaker"].split(":")[0] for r in rows if r["speaker"] == ids["A"]}
    assert files_of_a == {"a.wav", "b.wav"}  # A recurs: one id over both files
    speakers = [json.loads(line) for line in (tmp_path / "linked" / "speakers.jsonl").read_text().splitlines()]
    by_id = {s["id"]: s for s in speakers}
    assert len(by_id[ids["A"]]["files"]) == 2 and len(by_id[ids["B"]]["files"]) == 1
    assert all(s["centroid_distance"]["max"] < 0.3 for s in speakers)
    assert sum(summary["seconds_per_speaker"].values()) == pytest.approx(sum(s["seconds"] for s in speakers))
    assert sum(summary["histogram_seconds_per_speaker"].values()) == 3

    by_audio = {r["audio"]: r for r in rows}
    paired = [r for r in rows if "ref_audio" in r]
    assert len(paired) + summary["without_reference"] == len(rows) and paired
    for row in paired:  # pairing never crosses linked speakers, and never pairs a row with itself
        ref = by_audio[row["ref_audio"]]
        assert ref["speaker"] == row["speaker"] and ref is not row and row["ref_text"] == ref["text"]
    entries, _ = read_manifest(tmp_path / "linked" / "manifest.jsonl", skip_bad=False)  # every row parses
    assert len(entries) == len(rows) and all(Path(e.audio).is_file() for e in entries)
    rejects = [json.loads(line) for line in (tmp_path / "linked" / "rejects.jsonl").read_text().splitlines()]
    assert all(r["kind"] in ("empty_text", "no_words") for r in rejects)  # a random Whisper's texts, nothing else
    assert summary["rejected"] == len(rejects) == sum(summary["reject_kinds"].values())
    assert summary["rows"] + summary["rejected"] == sum(
        len((p / "manifest.jsonl").read_text().splitlines()) for p in parts)


def test_a_row_the_parser_refuses_is_rejected_alone_and_is_nobodys_reference(diarized, tmp_path):
    """A punctuation-only text: that row goes to rejects.jsonl, and no other row takes it as its reference
    (build would refuse the good row for its 'ref_text' otherwise)."""
    parts, _ = diarized
    copies = [tmp_path / "parts" / part.name for part in parts]
    for part, copy in zip(parts, copies, strict=True):
        shutil.copytree(part, copy)
    manifest = copies[0] / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["text"] = f"جملة رقم {i}"
    rows[0]["text"] = "؟!..."
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    second = copies[1] / "manifest.jsonl"
    second.write_text("".join(json.dumps(r | {"text": f"نص {i}"}, ensure_ascii=False) + "\n" for i, r in
                              enumerate(map(json.loads, second.read_text().splitlines()))), encoding="utf-8")
    summary = link_speakers(LinkConfig(segment_dirs=tuple(map(str, copies)), out=str(tmp_path / "linked")))
    linked = [json.loads(line) for line in (tmp_path / "linked" / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in linked if r.get("ref_text") == rows[0]["text"]] == []  # nobody's reference
    written, _ = read_manifest(tmp_path / "linked" / "manifest.jsonl", skip_bad=False)  # raises on a bad row
    total = len(rows) + len(second.read_text().splitlines())
    assert len(written) == summary["rows"] == total - 1 and rows[0]["id"] not in {e.id for e in written}
    assert sum(e.ref_audio is not None for e in written) + summary["without_reference"] == total - 1
    (reject,) = [json.loads(line) for line in (tmp_path / "linked" / "rejects.jsonl").read_text().splitlines()]
    assert reject["id"] == rows[0]["id"] and reject["kind"] == "no_words" and reject["where"] == f"{manifest}:1"
    assert summary["rejected"] == 1 and summary["reject_kinds"] == {"no_words": 1}


def test_linking_refuses_folders_without_centroids_and_its_own_inputs(diarized, tmp_path):
    parts, _ = diarized
    with pytest.raises(DataError, match="file_speakers"):
        LinkConfig(segment_dirs=(str(tmp_path),), out=str(tmp_path / "x"))
    with pytest.raises(Exception, match="input"):
        link_speakers(LinkConfig(segment_dirs=(str(parts[0]),), out=str(parts[0] / "linked")))
    assert histogram([5, 30, 59.9, 600, 7200]) == {"< 10 s": 1, "10 s - 1 min": 2, "1 - 10 min": 0,
                                                   "10 min - 1 h": 1, ">= 1 h": 1}


@pytest.mark.integration
def test_link_speakers_command_line(diarized, tmp_path, capsys):
    from launch.prepare_data import main

    parts, _ = diarized
    done = subprocess.run([sys.executable, "launch/prepare_data.py", "link-speakers", *map(str, parts), "--out",
                           str(tmp_path / "linked")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["speakers"] == 3
    assert main(["segment", "--input", str(parts[0]), "--out", str(tmp_path / "s"), "--num-speakers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--speakers diarize" in err and "Traceback" not in err


@pytest.mark.integration
def test_prepare_sbatch_runs_a_segment_part_and_the_link_step(tmp_path):
    """The script's dispatch, with a stand-in interpreter that records its arguments (no Slurm needed)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/calls\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "HIGGS_DS_ROOT": str(REPO), "VENV": str(venv), "SLURM_ARRAY_TASK_ID": "1",
           "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_JOB_ID": "7"}
    script = str(REPO / "launch" / "slurm" / "prepare.sbatch")
    subprocess.run(["bash", script, "segment", "--input", "rec/", "--out", "seg", "--speakers", "diarize"], env=env,
                   check=True, capture_output=True)
    (tmp_path / "seg.parts" / "0").mkdir(parents=True)
    env.pop("SLURM_ARRAY_TASK_ID")
    subprocess.run(["bash", script, "--link", "--out", str(tmp_path / "seg")], env=env, check=True,
                   capture_output=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["launch/prepare_data.py segment --part 1/4 --out seg.parts/1 --input rec/ --speakers diarize",
                     f"launch/prepare_data.py link-speakers --out {tmp_path}/seg {tmp_path}/seg.parts/0"]


def test_filter_pairs_again_within_speakers_among_the_kept_rows(diarized, tmp_path):
    from higgs_ds.prep.filter import FilterConfig, filter_manifest

    parts, _ = diarized
    link_speakers(LinkConfig(segment_dirs=tuple(map(str, parts)), out=str(tmp_path / "linked")))
    summary = filter_manifest(FilterConfig(manifest=str(tmp_path / "linked" / "manifest.jsonl"),
                                           out=str(tmp_path / "filtered"), dnsmos=False, min_snr_db=-100,
                                           min_lufs=-100, max_rate_z=1e9, ref_pairing="same-speaker"))
    rows = [json.loads(line) for line in (tmp_path / "filtered" / "manifest.jsonl").read_text().splitlines()]
    by_audio = {r["audio"]: r for r in rows}
    assert rows and summary["without_reference"] == sum("ref_audio" not in r for r in rows)
    for row in rows:
        if "ref_audio" in row:  # a kept row of the same linked speaker
            assert by_audio[row["ref_audio"]]["speaker"] == row["speaker"] and by_audio[row["ref_audio"]] is not row
