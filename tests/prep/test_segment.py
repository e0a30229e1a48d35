"""`prepare_data segment` on a synthetic long recording: espeak-ng sentences joined by pauses of random
length, a stretch of noise and a stretch of silence. The sentences come back as utterances with their
boundaries, the noise is dropped with a reason, and every second of input is accounted for."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from higgs_ds.errors import ConfigError, DataError
from higgs_ds.prep.segment import SegmentConfig, segment_recordings, shape_segments
from higgs_ds.prep.sources import SEGMENT_OUTPUT, find_sources
from tests.prep.long_recording import spoken_sentence
from tests.prep.tiny_whisper import save_tiny_whisper

RATE = 16_000
SENTENCES = ["ذهب الولد إلى المدرسة في الصباح الباكر", "الجو جميل اليوم في المدينة",
             "قرأت كتابا مفيدا عن تاريخ العرب", "شكرا لكم على حسن الاستماع"]
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(long wav, true sentence spans in seconds, noise span), and a tiny Whisper folder."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    pieces, truth = [np.zeros(RATE, dtype="float32")], []

    def now():
        return sum(map(len, pieces)) / RATE

    for index, sentence in enumerate(SENTENCES):
        wav = spoken_sentence(folder, sentence)
        truth.append((now(), now() + len(wav) / RATE))
        pieces += [wav, np.zeros(int(rng.uniform(0.6, 1.5) * RATE), dtype="float32")]
        if index == 1:
            noise_start = now()
            pieces += [(rng.standard_normal(3 * RATE) * 0.05).astype("float32"), np.zeros(RATE, dtype="float32")]
            noise = (noise_start, noise_start + 3.0)
        if index == 2:
            pieces.append(np.zeros(2 * RATE, dtype="float32"))
    path = folder / "lecture.wav"
    soundfile.write(path, np.concatenate(pieces), RATE)
    return path, truth, noise, save_tiny_whisper(folder / "whisper")


def test_finds_the_sentences_drops_the_noise_and_accounts_for_every_second(recording, tmp_path):
    path, truth, noise, whisper = recording
    summary = segment_recordings(SegmentConfig(inputs=(str(path),), out=str(tmp_path), asr=str(whisper),
                                               min_asr_confidence=0.0, asr_batch_size=3))  # a batch, then the rest
    rows = [json.loads(line) for line in (tmp_path / "segments.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["kept"]]
    assert len(kept) == len(SENTENCES)
    for row, (start, end) in zip(kept, truth, strict=True):
        assert abs(row["start"] - start) <= 0.3 and abs(row["end"] - end) <= 0.3, (row, start, end)
        assert 0.5 < row["vad_score"] <= 1 and row["asr_confidence"] is not None and row["text"]
    assert not any(r["start"] < noise[1] and r["end"] > noise[0] for r in kept)  # nothing kept from the noise
    dropped = summary["dropped_seconds"]
    assert dropped["no_speech"] + dropped["too_short"] >= noise[1] - noise[0]
    total = soundfile.info(str(path)).frames / RATE
    assert abs(summary["kept_seconds"] + sum(dropped.values()) - total) <= 1 / RATE
    assert summary["kept_seconds"] == pytest.approx(sum(r["end"] - r["start"] for r in kept), abs=0.01)

    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [m["speaker"] for m in manifest] == ["lecture"] * len(SENTENCES)
    for line, row in zip(manifest, kept, strict=True):
        clip, rate = soundfile.read(tmp_path / line["audio"])
        assert rate == RATE and len(clip) / RATE == pytest.approx(row["end"] - row["start"], abs=0.002)
        assert line["text"] == row["text"]


def test_low_confidence_undecodable_and_silent_files_are_dropped_with_their_reason(recording, tmp_path):
    path, _, _, whisper = recording
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(path, folder / "talk_spk7.wav")
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    soundfile.write(folder / "quiet.wav", np.zeros(3 * RATE, dtype="float32"), RATE)
    summary = segment_recordings(SegmentConfig(inputs=(str(folder),), out=str(tmp_path / "out"), asr=str(whisper),
                                               min_asr_confidence=0.5, speaker_pattern=r"_(?P<speaker>spk\d+)"))
    by_file = {row["source"].rsplit("/", 1)[-1]: row for row in summary["per_file"]}
    assert by_file["broken.wav"]["dropped"] == {"failed_to_decode": 0.0}
    assert by_file["quiet.wav"]["dropped"] == {"no_speech": 3.0} and by_file["quiet.wav"]["kept"] == 0
    talk = by_file["talk_spk7.wav"]
    assert talk["kept"] == 0 and talk["dropped"]["low_asr_confidence"] > 10  # a random Whisper is never sure
    assert talk["seconds"] == pytest.approx(sum(talk["dropped"].values()), abs=1 / RATE)
    assert (tmp_path / "out" / "manifest.jsonl").read_text() == ""


def test_a_file_that_fails_part_way_keeps_what_was_read_before(recording, tmp_path):
    path, truth, _, _ = recording
    wav, _ = soundfile.read(path, dtype="float32")
    soundfile.write(tmp_path / "twice.flac", np.concatenate([wav, wav]), RATE)
    data = (tmp_path / "twice.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:int(len(data) * 0.75)])  # the header still says the full length
    summary = segment_recordings(SegmentConfig(inputs=(str(tmp_path / "cut.flac"),), out=str(tmp_path / "out")))
    (row,) = summary["per_file"]
    assert row["seconds"] == pytest.approx(2 * len(wav) / RATE)
    read = row["seconds"] - row["dropped"]["failed_to_decode"]
    assert len(wav) / RATE < read < row["seconds"]  # the first copy and some of the second were read
    assert row["kept"] > sum(end - start for start, end in truth)  # the first copy's sentences, and more
    ends = [json.loads(line)["end"] for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()]
    assert max(ends) <= read
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)


@pytest.mark.integration
def test_segment_command_line(recording, tmp_path):
    path, _, _, whisper = recording
    done = subprocess.run([sys.executable, "launch/prepare_data.py", "segment", "--input", str(path), "--out",
                           str(tmp_path), "--asr", str(whisper), "--min-asr-confidence", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept_segments"] == len(SENTENCES)
    bad = subprocess.run([sys.executable, "launch/prepare_data.py", "segment", "--input", str(path), "--out",
                          str(tmp_path), "--asr", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "--asr" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_short_spans_join_a_close_neighbour_and_padded_overlaps_are_cut_in_the_middle():
    cfg = SegmentConfig(inputs=(), out="", min_seconds=1.0, max_seconds=5.0, join_gap=0.5)
    # 0.4 s span 0.3 s after a 2 s span joins it; a lone 0.4 s span far from anything stays (and is too short)
    assert shape_segments([(0, 20), (23, 27), (60, 64)], cfg, rate=10) == [(0, 27), (60, 64)]
    # joining must not exceed max_seconds
    assert shape_segments([(0, 48), (50, 54)], cfg, rate=10) == [(0, 48), (50, 54)]
    assert shape_segments([(0, 22), (20, 40)], cfg, rate=10) == [(0, 21), (21, 40)]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="min-seconds"):
        SegmentConfig(inputs=(), out="", min_seconds=5, max_seconds=2)
    with pytest.raises(ConfigError, match="speaker"):
        SegmentConfig(inputs=(), out="", speaker_pattern=r"(\w+)")


def test_input_discovery_never_descends_into_a_segment_output(tmp_path):
    """Cut wavs are never segmented again: folders of an earlier segment run (marked, or from before markers,
    with their segments.jsonl) are skipped, and so is anything of --out that a list of paths names."""
    recordings, quiet = tmp_path / "recordings", np.zeros(RATE, dtype="float32")
    for wav in ("talk.wav", "old/wavs/talk/talk_0000.wav", "legacy/wavs/talk/talk_0000.wav", "more/b.wav"):
        (recordings / wav).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(recordings / wav, quiet, RATE)
    SEGMENT_OUTPUT.create(recordings / "old")
    (recordings / "legacy" / "segments.jsonl").write_text("")
    assert find_sources((str(recordings),)) == [recordings / "more/b.wav", recordings / "talk.wav"]
    listing = tmp_path / "list.txt"
    listing.write_text("recordings/talk.wav\nrecordings/old/wavs/talk/talk_0000.wav\n")
    assert find_sources((str(listing),), out=recordings / "old") == [recordings / "talk.wav"]


def test_recordings_of_one_name_in_different_folders_keep_their_own_wavs(recording, tmp_path):
    """talk.wav in two subfolders of one input: each gets its own wavs/<folder>/talk/ and its own ids; the same
    two as separate --input folders (where nothing tells them apart) are refused before anything is written."""
    path, *_ = recording
    root = tmp_path / "rec"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        shutil.copy(path, root / folder / "talk.wav")
    segment_recordings(SegmentConfig(inputs=(str(root),), out=str(tmp_path / "seg")))
    cut = tmp_path / "seg" / "wavs"
    wavs = sorted(p.relative_to(cut).as_posix() for p in cut.rglob("*.wav"))
    assert wavs[0].startswith("a/talk/a__talk_0000") and any(w.startswith("b/talk/b__talk_") for w in wavs)
    assert len(wavs) == 2 * len(SENTENCES)

    with pytest.raises(DataError, match=r"would both be named 'talk'"):
        segment_recordings(SegmentConfig(inputs=(str(root / "a"), str(root / "b")), out=str(tmp_path / "two")))
    assert not (tmp_path / "two").exists()
