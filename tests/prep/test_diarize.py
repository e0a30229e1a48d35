"""Diarization in `prepare_data segment --speakers diarize`, on espeak-ng conversations: the speakers are
found with high purity, overlapped speech is dropped, every sample is accounted for; and the pieces of
the diarizer (blend share, span tiling, clustering within a bound) against hand-worked numbers."""

import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from higgs_ds.errors import ConfigError
from higgs_ds.prep.diarize import OVERLAP, UNCERTAIN, ClusterRule, SpanWindows, blend_share, cluster, span_pieces
from higgs_ds.prep.segment import SegmentConfig
from higgs_ds.prep.sources import part_of, relative_name

RATE = 16_000


def _rows(folder):
    return [json.loads(line) for line in (folder / "segments.jsonl").read_text().splitlines()]


def _overlap(a, b):
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def purity(kept: list[dict], turns: list[tuple[float, float, str]], overlap) -> tuple[float, int]:
    """Duration-weighted purity under the best one-to-one mapping of found to true speakers: seconds of
    kept speech whose found speaker maps to the voice truly speaking, over kept seconds of one voice."""
    found, voices = sorted({r["speaker"] for r in kept}), sorted({v for _, _, v in turns})
    seconds = np.zeros((len(found), len(voices)))
    for row in kept:
        for start, end, voice in turns:
            both = _overlap((row["start"], row["end"]), (start, end))
            if overlap:
                both -= _overlap((row["start"], row["end"]), (max(start, overlap[0]), min(end, overlap[1])))
            seconds[found.index(row["speaker"]), voices.index(voice)] += both
    rows, cols = linear_sum_assignment(-seconds)
    return seconds[rows, cols].sum() / seconds.sum(), len(found)


def test_three_speakers_found_overlap_dropped_every_sample_accounted(conversations, diarized):
    _, talk, _ = conversations
    (first, _), (summary, _) = diarized
    rows = _rows(first)
    kept = [r for r in rows if r["kept"]]
    score, speakers = purity(kept, talk.turns, talk.overlap)
    assert speakers == 3 and score >= 0.9, (speakers, score)
    assert {r["speaker"] for r in kept} == {"a.wav:spk0", "a.wav:spk1", "a.wav:spk2"}
    assert not [r for r in kept if _overlap((r["start"], r["end"]), talk.overlap) > 0]  # the overlap is not kept
    change = talk.turns[3][1]  # A hands over to B after 0.1 s: a change VAD does not cut at
    assert not [r for r in kept if r["start"] < change - 0.3 and r["end"] > change + 0.3]  # split there
    after = [r for r in kept if change <= r["start"] < talk.turns[4][1]]
    assert after and after[0]["speaker"] != kept[0]["speaker"]  # B's, not A's
    # the windows across the change hear both voices: at most 3.2 s around it is dropped, never kept mixed
    assert after[0]["start"] - change <= 3.2
    assert summary["dropped_seconds"]["overlap"] >= talk.overlap[1] - talk.overlap[0]
    (row,) = summary["per_file"]
    assert row["seconds"] == pytest.approx(talk.seconds, abs=1 / RATE)
    assert row["kept"] + sum(row["dropped"].values()) == pytest.approx(row["seconds"], abs=1 / RATE)
    assert row["kept"] >= 0.75 * sum(end - start for start, end, _ in talk.turns)  # not dropped wholesale
    manifest = [json.loads(line) for line in (first / "manifest.jsonl").read_text().splitlines()]
    assert [m["speaker"] for m in manifest] == [r["speaker"] for r in kept]
    centroids = [json.loads(line) for line in (first / "file_speakers.jsonl").read_text().splitlines()]
    assert sorted(c["speaker"] for c in centroids) == sorted({r["speaker"] for r in kept})
    assert all(len(c["centroid"]) == 256 and c["encoder"] == "resemblyzer" for c in centroids)


def test_parts_split_the_sorted_files_and_labels_are_relative_to_the_input(conversations, diarized, tmp_path):
    folder, _, _ = conversations
    (_, second), (_, summary) = diarized
    assert [r["source"] for r in summary["per_file"]] == [str(folder / "b.wav")]
    assert {r["speaker"] for r in _rows(second) if r["kept"]} == {"b.wav:spk0", "b.wav:spk1"}
    files = [tmp_path / f"{i}.wav" for i in range(5)]
    assert part_of(files, (0, 2)) + part_of(files, (1, 2)) == files and len(part_of(files, (0, 2))) == 2
    (tmp_path / "show").mkdir()
    assert relative_name(tmp_path / "show" / "ep1.wav", (str(tmp_path),)) == "show/ep1.wav"
    assert relative_name(tmp_path / "show" / "ep1.wav", (str(tmp_path / "show" / "ep1.wav"),)) == "ep1.wav"


def test_blend_share_reads_one_voice_as_zero_and_a_mix_as_its_share():
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.standard_normal((2, 16)))
    between = float(a @ b)
    for share in (0.0, 0.2, 0.4):
        mix = (1 - share) * a + share * b
        mix /= np.linalg.norm(mix)
        assert blend_share(float(mix @ a), float(mix @ b), between) == pytest.approx(share, abs=1e-6)


def test_span_pieces_tile_the_span_drop_overlap_and_guard_a_change():
    step, size = 8, 16  # windows of 16 samples every 8
    starts = np.arange(0, 72, step)
    span = SpanWindows(100, 188, np.zeros((len(starts), 2)), np.stack([starts, starts + size], 1) + 100)
    # centres at 108, 116, ...: window i speaks for [104 + 8i, 112 + 8i) (the ends stretch to the span's)
    states = [0, 0, 0, 1, 1, OVERLAP, 1, UNCERTAIN, 1]
    pieces = [(p.start, p.end, p.speaker, p.reason) for p in span_pieces(span, states, guard=2)]
    assert pieces == [(100, 126, 0, None), (126, 130, None, UNCERTAIN),  # the change 0 -> 1 at 128, +-2
                      (130, 132, 1, None), (132, 164, None, OVERLAP),  # window 5 and its neighbours: [132, 164)
                      (164, 168, None, UNCERTAIN), (168, 188, 1, None)]  # window 7's own stretch, then 8's
    assert pieces[0][0] == span.start and pieces[-1][1] == span.end
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))


def test_clustering_holds_at_most_max_units_and_assigns_the_rest():
    rng = np.random.default_rng(1)
    voices = rng.standard_normal((3, 32))
    units = np.concatenate([v + 0.1 * rng.standard_normal((40, 32)) for v in voices])
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    truth = np.repeat(np.arange(3), 40)
    for rule in (ClusterRule(max_units=20), ClusterRule(num_speakers=3, max_units=20), ClusterRule()):
        labels = cluster(units, rng.uniform(1, 2, len(units)), rule)
        assert len(set(labels)) == 3 and all(len(set(labels[truth == k])) == 1 for k in range(3)), rule


def test_bad_speaker_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--speakers diarize"):
        SegmentConfig(inputs=(), out="", num_speakers=2)
    with pytest.raises(ConfigError, match="speaker-pattern"):
        SegmentConfig(inputs=(), out="", speakers="diarize", speaker_pattern=r"(?P<speaker>\w+)")
    with pytest.raises(ConfigError, match="--speaker-encoder"):
        SegmentConfig(inputs=(), out="", speakers="diarize", speaker_encoder="ecapa")
    with pytest.raises(ConfigError, match="--diarizer"):
        SegmentConfig(inputs=(), out="", speakers="diarize", diarizer=f"pyannote:{tmp_path / 'nowhere'}")


def test_one_encoder_interface_gives_windows_for_any_encoder(tmp_path):
    from higgs_ds.quality.signal import resample
    from higgs_ds.quality.speaker_encoder import load_speaker_encoder, parse_encoder_spec, unit
    from tests.generate.test_metrics import save_tiny_wavlm

    save_tiny_wavlm(tmp_path / "wavlm")
    encoder = load_speaker_encoder(f"wavlm:{tmp_path / 'wavlm'}")
    wav = np.random.default_rng(0).standard_normal(int(3.3 * 8000)).astype(np.float32) * 0.1
    embeds, bounds = encoder.windows(wav, 8000)
    # 1.6 s every 0.8 s at 8 kHz, and the tail in a window of full length
    assert bounds.tolist() == [[0, 12800], [6400, 19200], [12800, 25600], [13600, 26400]]
    assert np.allclose(embeds[1], unit(encoder.embed_clip(resample(wav, 8000, 16000)[12800:38400])), atol=1e-5)
    assert np.allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5)
    assert parse_encoder_spec("resemblyzer") == ("resemblyzer", None)
    with pytest.raises(ValueError, match="wavlm:PATH"):
        parse_encoder_spec("wavlm:")
