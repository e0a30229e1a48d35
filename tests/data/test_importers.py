"""Corpus importers: each format on a small fixture folder with broken rows of every kind; exact counts,
every written line passes the manifest parser, deterministic splits, same-speaker reference pairing."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from higgs_ds.data.importers import ImportConfig, import_corpus
from higgs_ds.data.importers.common import SourceRow, check_rows
from higgs_ds.data.importers.hf import _audio_source
from higgs_ds.data.manifest import read_manifest


def _tone(seconds: float = 0.2, rate: int = 16000, freq: float = 220.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _wav(path: Path, seconds: float = 0.2, rate: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, _tone(seconds, rate), rate, format=fmt)
    return path


def _bytes(fmt: str, seconds: float = 0.2, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, _tone(seconds, rate), rate, format=fmt)
    return buf.getvalue()


def _outputs(out: Path) -> tuple[dict[str, list[dict]], list[dict]]:
    """Both manifests read back through the manifest reader (which raises on any bad line) + rejects."""
    manifests = {}
    for split in ("train", "eval"):
        entries, rejects = read_manifest(out / f"{split}.jsonl", skip_bad=False)
        assert rejects == []
        lines = (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        manifests[split] = [json.loads(line) for line in lines]
        assert [e.id for e in entries] == [r["id"] for r in manifests[split]]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"where", "id", "kind", "reason"} and r["reason"] for r in rejects)
    return manifests, rejects


def _check_counts(summary: dict, out: Path, read: int, written: int, kinds: dict[str, int]) -> dict:
    manifests, rejects = _outputs(out)
    assert summary["read"] == read
    assert sum(summary["written"].values()) == written
    assert summary["reject_kinds"] == dict(sorted(kinds.items()))
    assert dict(Counter(r["kind"] for r in rejects)) == kinds
    assert {s: len(m) for s, m in manifests.items()} == summary["written"]
    assert json.loads((out / "import_summary.json").read_text(encoding="utf-8")) == summary
    return manifests


# ---- LJSpeech ----------------------------------------------------------------------------------


@pytest.fixture
def ljspeech(tmp_path) -> Path:
    src = tmp_path / "arabic_lj"
    for i in (1, 2, 3, 4):
        _wav(src / "wavs" / f"lj_{i:03d}.wav", seconds=0.1 * i)
    (src / "wavs" / "lj_006.wav").write_bytes(b"RIFF not really a wav file")
    soundfile.write(src / "wavs" / "lj_007.wav", np.zeros(0, np.float32), 16000)
    for i in (8, 9):
        _wav(src / "wavs" / f"lj_{i:03d}.wav")
    lines = [
        "lj_001|مرحبا بكم في البيت|مرحبا بكم في البيت",
        'lj_002|"قال": نعم|',  # quotes are literal; empty normalised column -> the raw text
        "lj_003|النص الثالث",  # two columns
        "lj_004|العدد 4|العدد أربعة",
        "",  # blank: not a row
        "lj_005|لا يوجد ملف صوتي|",  # missing_file
        "lj_006|ملف تالف|",  # unreadable_audio
        "lj_007|ملف فارغ|",  # empty_audio
        "lj_008|   |",  # empty_text
        "lj_009|؟!... «»|",  # no_words
        "lj_001|مكرر|مكرر",  # duplicate_id
        "lj_010",  # malformed_line
        "a|b|c|d",  # malformed_line
    ]
    data = "\n".join(lines).encode("utf-8") + b"\n\xff\xfe|bad bytes|\n"  # malformed_line (not UTF-8)
    (src / "metadata.csv").write_bytes(data)
    return src


LJ_REJECTS = {"missing_file": 1, "unreadable_audio": 1, "empty_audio": 1, "empty_text": 1, "no_words": 1,
              "duplicate_id": 1, "malformed_line": 3}


def test_ljspeech_counts_and_text_as_is(ljspeech, tmp_path):
    out = tmp_path / "out"
    summary = import_corpus(ImportConfig(fmt="ljspeech", src=str(ljspeech), out=str(out)))
    manifests = _check_counts(summary, out, read=13, written=4, kinds=LJ_REJECTS)
    rows = {r["id"]: r for r in manifests["train"]}
    assert list(rows) == ["lj_001", "lj_002", "lj_003", "lj_004"] and manifests["eval"] == []
    assert rows["lj_002"]["text"] == '"قال": نعم' and rows["lj_004"]["text"] == "العدد أربعة"
    assert {r["speaker"] for r in rows.values()} == {"arabic_lj"}
    assert rows["lj_003"]["audio"] == str(ljspeech / "wavs" / "lj_003.wav")
    assert summary["hours"]["train"] == round(1.0 / 3600, 4)
    _, rejects = _outputs(out)
    by_where = {r["where"]: r for r in rejects}
    assert by_where["metadata.csv:11"]["kind"] == "duplicate_id" and by_where["metadata.csv:11"]["id"] == "lj_001"
    assert by_where["metadata.csv:14"]["reason"] == "line is not valid UTF-8"


def test_ljspeech_utterance_split_is_deterministic(ljspeech, tmp_path):
    def run(name: str, seed: int) -> dict:
        cfg = ImportConfig(fmt="ljspeech", src=str(ljspeech), out=str(tmp_path / name), eval_fraction=0.5,
                           seed=seed, speaker="spk")
        import_corpus(cfg)
        return {s: [r["id"] for r in m] for s, m in _outputs(tmp_path / name)[0].items()}

    first, again = run("a", 0), run("b", 0)
    assert first == again and len(first["eval"]) == 2 and not set(first["train"]) & set(first["eval"])
    assert sorted(first["train"] + first["eval"]) == ["lj_001", "lj_002", "lj_003", "lj_004"]
    seeds = [run(f"s{seed}", seed)["eval"] for seed in range(1, 6)]
    assert any(split != first["eval"] for split in seeds)  # the seed matters
    with pytest.raises(ValueError, match="at least 2 speakers"):
        import_corpus(ImportConfig(fmt="ljspeech", src=str(ljspeech), out=str(tmp_path / "x"), eval_fraction=0.5,
                                   split_by="speaker"))


# ---- Common Voice ------------------------------------------------------------------------------


CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"


def _cv_row(client: str, clip: str, sentence: str) -> str:
    return f"{client}\t{clip}\t{sentence}\t2\t0\t\t\t\t\tar\t"


@pytest.fixture
def commonvoice(tmp_path) -> Path:
    src = tmp_path / "cv-ar"
    mp3 = "MP3" in soundfile.available_formats()
    good = [("spkA", 3), ("spkB", 2), ("spkC", 1), ("spkD", 2), ("spkE", 2)]
    rows, n = [CV_HEADER], 0
    for speaker, count in good:
        for _ in range(count):
            n += 1
            # real clips are mp3; libsndfile reads a wav named .mp3 by content where it lacks MP3 support
            _wav(src / "clips" / f"common_voice_ar_{n}.mp3", fmt="MP3" if mp3 else "WAV")
            rows.append(_cv_row(speaker, f"common_voice_ar_{n}.mp3", f'جملة "رقم" {n}'))
    rows += [
        _cv_row("spkA", "common_voice_ar_999.mp3", "لا يوجد"),  # missing_file
        _cv_row("spkB", "common_voice_ar_1.mp3", "نفس الملف"),  # duplicate_id
        _cv_row("spkB", "common_voice_ar_2.mp3", "")[:-3],  # malformed_line (too few fields)
    ]
    _wav(src / "clips" / "common_voice_ar_100.mp3", fmt="MP3" if mp3 else "WAV")
    rows.append(_cv_row("spkC", "common_voice_ar_100.mp3", " "))  # empty_text
    (src / "validated.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (src / "train.tsv").write_text("\n".join(rows[:4]) + "\n", encoding="utf-8")
    return src


def test_commonvoice_speaker_split_and_reference_pairing(commonvoice, tmp_path):
    out = tmp_path / "out"
    cfg = ImportConfig(fmt="commonvoice", src=str(commonvoice), out=str(out), split_by="speaker",
                       eval_fraction=0.3, seed=3, ref_pairing="same-speaker")
    summary = import_corpus(cfg)
    kinds = {"missing_file": 1, "duplicate_id": 1, "malformed_line": 1, "empty_text": 1}
    manifests = _check_counts(summary, out, read=14, written=10, kinds=kinds)
    speakers = {s: {r["speaker"] for r in m} for s, m in manifests.items()}
    assert speakers["train"] and speakers["eval"] and not speakers["train"] & speakers["eval"]
    assert summary["written"]["eval"] >= 3  # speakers are added until 30% of the rows are in eval
    by_audio = {r["audio"]: r for m in manifests.values() for r in m}
    unpaired = {"train": 0, "eval": 0}
    for split, rows in manifests.items():
        per_speaker = Counter(r["speaker"] for r in rows)
        for r in rows:
            if per_speaker[r["speaker"]] == 1:
                assert "ref_audio" not in r
                unpaired[split] += 1
                continue
            ref = by_audio[r["ref_audio"]]
            assert ref["id"] != r["id"] and ref["speaker"] == r["speaker"] and ref["text"] == r["ref_text"]
            assert ref in rows  # the reference comes from the same split
    assert summary["without_reference"] == unpaired and sum(unpaired.values()) == 1  # spkC
    assert manifests["train"][0]["text"].startswith('جملة "رقم"')
    assert import_corpus(cfg) == summary and _outputs(out)[0] == manifests  # deterministic

    train_only = import_corpus(ImportConfig(fmt="commonvoice", src=str(commonvoice), out=str(tmp_path / "t"),
                                            split="train"))
    assert (train_only["read"], train_only["written"]["train"]) == (3, 3)
    with pytest.raises(FileNotFoundError, match="choose one with --split"):
        import_corpus(ImportConfig(fmt="commonvoice", src=str(commonvoice), out=str(tmp_path / "x"), split="dev"))


# ---- Kaldi -------------------------------------------------------------------------------------


@pytest.fixture
def kaldi(tmp_path) -> Path:
    src, audio = tmp_path / "data" / "train", tmp_path / "audio"
    src.mkdir(parents=True)
    for u in ("u1", "u2", "u3", "u4", "u8", "u10"):
        _wav(audio / f"{u}.wav")
    _wav(src / "local" / "u2.wav")  # a relative path, from --src
    scp = [f"u1 {audio / 'u1.wav'}", "u2 local/u2.wav", f"u3\t{audio / 'u3.wav'}", f"u4 {audio / 'u4.wav'}",
           "u5 sox /corpus/u5.flac -t wav - |",  # piped_command
           "u6 /corpus/raw.ark:1234",  # archive_entry
           "u7",  # malformed_line
           f"u8 {audio / 'u8.wav'}",  # missing_text
           f"u10 {audio / 'u10.wav'}",  # missing_speaker
           f"u2 {audio / 'u2.wav'}"]  # duplicate_id
    texts = ["u1 النص الأول", "u2 النص الثاني", "u3 النص الثالث", "u4 النص الرابع", "u5 خمسة", "u6 ستة",
             "u7 سبعة", "u9 بلا صوت",  # missing_audio
             "u1 مكرر", "u10 عشرة"]  # duplicate_id
    (src / "wav.scp").write_text("\n".join(scp) + "\n", encoding="utf-8")
    (src / "text").write_text("\n".join(texts) + "\n", encoding="utf-8")
    spk = {"u1": "s1", "u2": "s1", "u3": "s1", "u4": "s2", "u5": "s2", "u6": "s2", "u7": "s2", "u8": "s2"}
    (src / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in spk.items()), encoding="utf-8")
    return src


def test_kaldi_counts_and_pairing(kaldi, tmp_path):
    out = tmp_path / "out"
    summary = import_corpus(ImportConfig(fmt="kaldi", src=str(kaldi), out=str(out), ref_pairing="same-speaker"))
    kinds = {"piped_command": 1, "archive_entry": 1, "malformed_line": 1, "missing_text": 1, "missing_speaker": 1,
             "duplicate_id": 2, "missing_audio": 1}
    manifests = _check_counts(summary, out, read=12, written=4, kinds=kinds)
    rows = {r["id"]: r for r in manifests["train"]}
    assert rows["u2"]["audio"] == str(kaldi / "local" / "u2.wav") and rows["u1"]["text"] == "النص الأول"
    assert {rows[u]["ref_audio"] for u in ("u1", "u2", "u3")} <= {rows[u]["audio"] for u in ("u1", "u2", "u3")}
    assert all(rows[u]["ref_audio"] != rows[u]["audio"] for u in ("u1", "u2", "u3"))
    assert "ref_audio" not in rows["u4"] and summary["without_reference"] == {"train": 1, "eval": 0}
    _, rejects = _outputs(out)
    piped = next(r for r in rejects if r["kind"] == "piped_command")
    assert piped["where"] == "wav.scp:5" and piped["id"] == "u5" and "shell pipe" in piped["reason"]

    (kaldi / "utt2spk").unlink()
    with pytest.raises(ValueError, match="needs speaker ids"):
        import_corpus(ImportConfig(fmt="kaldi", src=str(kaldi), out=str(tmp_path / "x"), ref_pairing="same-speaker"))
    (kaldi / "segments").write_text("u1 rec1 0.0 1.0\n")
    with pytest.raises(ValueError, match="segments"):
        import_corpus(ImportConfig(fmt="kaldi", src=str(kaldi), out=str(tmp_path / "y")))


# ---- Hugging Face ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_rows() -> list[dict]:
    good = [("a", "wav", "spk1"), ("b", "flac", "spk1"), ("c", "wav", "spk2"), ("d", "wav", "spk2")]
    rows = [{"audio": {"bytes": _bytes(fmt.upper()), "path": f"{i}.{fmt}"}, "text": f"نص {i}", "id": i,
             "speaker": s} for i, fmt, s in good]
    bad = [
        ("e", {"bytes": b"garbage", "path": "e.wav"}, "نص"),  # unreadable_audio
        ("f", None, "نص"),  # no_audio
        ("g", {"bytes": _bytes("WAV", seconds=0.0), "path": "g.wav"}, "نص"),  # empty_audio
        ("h", {"bytes": _bytes("WAV"), "path": "h.wav"}, ""),  # empty_text
        ("i", {"bytes": _bytes("WAV"), "path": "i.wav"}, None),  # empty_text
        ("a", {"bytes": _bytes("WAV"), "path": "a2.wav"}, "نص"),  # duplicate_id
        ("j", {"bytes": _bytes("WAV"), "path": "j.wav"}, "..."),  # no_words
    ]
    return rows + [{"audio": a, "text": t, "id": i, "speaker": "spk3"} for i, a, t in bad]


HF_REJECTS = {"unreadable_audio": 1, "no_audio": 1, "empty_audio": 1, "empty_text": 2, "duplicate_id": 1,
              "no_words": 1}


def _hf_dataset(rows: list[dict]):
    import datasets

    features = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "text": datasets.Value("string"), "id": datasets.Value("string"),
                                  "speaker": datasets.Value("string")})
    # built as a plain struct, then typed Audio: encoding Audio values needs torchcodec
    return datasets.Dataset.from_list(rows, features=features).cast_column("audio", datasets.Audio())


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_counts_audio_written(hf_rows, tmp_path, layout):
    import datasets

    src, out = tmp_path / "hf", tmp_path / "out"
    train, test = _hf_dataset(hf_rows), _hf_dataset(hf_rows[:2])
    if layout == "save_to_disk":
        datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(src))
    else:
        (src / "data").mkdir(parents=True)
        train.to_parquet(str(src / "data" / "train-00000-of-00001.parquet"))
        test.to_parquet(str(src / "data" / "test-00000-of-00001.parquet"))
    cfg = dict(fmt="hf", src=str(src), split="train", speaker_column="speaker", id_column="id")
    summary = import_corpus(ImportConfig(**cfg, out=str(out)))
    manifests = _check_counts(summary, out, read=11, written=4, kinds=HF_REJECTS)
    rows = {r["id"]: r for r in manifests["train"]}
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["0000000.wav", "0000001.wav", "0000002.wav",
                                                                  "0000003.wav"]  # rejected rows' audio is gone
    written, rate = soundfile.read(out / rows["b"]["audio"], dtype="float32")  # flac bytes -> wav, lossless
    original, _ = soundfile.read(io.BytesIO(hf_rows[1]["audio"]["bytes"]), dtype="float32")
    assert rate == 16000 and np.array_equal(written, original)
    assert rows["c"]["speaker"] == "spk2" and rows["c"]["text"] == "نص c"

    with pytest.raises(ValueError, match=r"choose one with --split"):
        import_corpus(ImportConfig(fmt="hf", src=str(src), out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="no columns"):
        import_corpus(ImportConfig(fmt="hf", src=str(src), out=str(tmp_path / "x"), split="test",
                                   text_column="sentence"))
    default_ids = import_corpus(ImportConfig(fmt="hf", src=str(src), out=str(tmp_path / "ids"), split="test"))
    assert default_ids["written"]["train"] == 2
    assert [r["id"] for r in _outputs(tmp_path / "ids")[0]["train"]] == ["test_0000000", "test_0000001"]


def test_hf_cells_arrays_and_paths(tmp_path):
    """Audio cells that datasets' writers never store (they embed local files) but other tools do."""
    samples = _tone(0.1, 8000)
    cells = [{"array": samples, "sampling_rate": 8000}, {"array": [], "sampling_rate": 8000},
             {"bytes": None, "path": "clips/x.wav"}, "/elsewhere/y.wav"]
    sources = [_audio_source(c, tmp_path) for c in cells]
    assert sources[2:] == [tmp_path / "clips" / "x.wav", Path("/elsewhere/y.wav")]
    rows = [SourceRow(f"x[{i}]", f"u{i}", "نص", s) for i, s in enumerate(sources)]
    result = check_rows(rows, tmp_path)
    assert [a.record["id"] for a in result.accepted] == ["u0"]
    assert [r["kind"] for r in result.rejects] == ["empty_audio", "missing_file", "missing_file"]
    written, rate = soundfile.read(tmp_path / result.accepted[0].record["audio"], dtype="float32")
    assert rate == 8000 and np.array_equal(written, samples)


def test_config_refuses_foreign_options(ljspeech, tmp_path):
    with pytest.raises(ValueError, match=r"\['audio_column'\] do not apply to --from ljspeech"):
        ImportConfig(fmt="ljspeech", src=str(ljspeech), out=str(tmp_path), audio_column="wav")
    with pytest.raises(ValueError, match="eval_fraction"):
        ImportConfig(fmt="ljspeech", src=str(ljspeech), out=str(tmp_path), eval_fraction=1.0)


# ---- end to end: CLI import -> build ------------------------------------------------------------


def test_cli_import_then_build(ljspeech, tmp_path, capsys):
    from higgs_ds.data.demo import build_seeded_demo_dac
    from launch.prepare_data import main

    out = tmp_path / "manifests"
    assert main(["import", "--from", "ljspeech", "--src", str(ljspeech), "--out", str(out), "--speaker", "lj",
                 "--ref-pairing", "same-speaker"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["read"] == 13 and printed["written"] == {"train": 4, "eval": 0} and printed["rejected"] == 9
    codec = build_seeded_demo_dac(tmp_path / "dac.pth")
    assert main(["build", "--manifest", str(out / "train.jsonl"), "--out", str(tmp_path / "shards"),
                 "--codec-path", str(codec), "--codec-device", "cpu"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["num_samples"] == 4 and built["rejects"] == 0
