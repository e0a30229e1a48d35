"""`build --part i/N` + `merge` give what one build gives; merge refuses parts that do not belong together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from higgs_ds.audio_spec import AudioSpec, AudioSpecMismatchError
from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import build_seeded_demo_dac
from higgs_ds.data.merge import merge_parts
from higgs_ds.data.parts import part_lines
from higgs_ds.data.shards import iter_tar_samples, list_shards, load_index
from higgs_ds.errors import DataError
from launch import prepare_data

SPEC = AudioSpec(codec="dac", sample_rate=16000, frame_rate=25.0, num_codebooks=4, codebook_size=1024)


def split_contents(folder: Path) -> list[tuple[str, bytes]]:
    """(sample id, codes bytes) of every sample of a split, in shard order."""
    out = []
    for shard in list_shards(folder):
        for sample in iter_tar_samples(shard):
            out.append((json.loads(sample["json"])["id"], sample["codes.npy"]))
    return out


def index_counts(index: dict) -> dict:
    return {k: index[k] for k in ("num_samples", "num_frames", "speakers", "rejects", "reject_kinds", "audio_spec")}


def write_audio_manifest(folder: Path, n: int = 7) -> Path:
    """`n` short tones (one missing file, rejected with --skip-bad) in a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 0.3 + 0.05 * i
        t = np.arange(int(seconds * 16000)) / 16000
        soundfile.write(folder / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t), 16000)
        rows.append({"id": f"utt{i}", "text": f"جملة {i}", "audio": f"{i}.wav", "speaker": f"s{i % 3}"})
    rows[4]["audio"] = "missing.wav"
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return manifest


def write_codes_manifest(folder: Path, ids: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, sample_id in enumerate(ids):
        np.save(folder / f"{i}.npy", np.random.default_rng(i).integers(0, 1024, (4, 5 + i)))
        rows.append({"id": sample_id, "text": f"نص {i}", "codes": f"{i}.npy"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return manifest


def test_part_lines_cover_every_line_once():
    for lines in (0, 1, 5, 7, 100):
        for count in (1, 2, 3, 8):
            ranges = [part_lines(lines, (i, count)) for i in range(count)]
            covered = [n for first, end in ranges for n in range(first, end)]
            assert covered == list(range(1, lines + 1))


def test_two_parts_merged_equal_one_build(tmp_path):
    manifest = write_audio_manifest(tmp_path / "corpus")
    codec = CodecConfig(path=str(build_seeded_demo_dac(tmp_path / "dac.pth", seed=0)), device="cpu")
    common = dict(manifest=str(manifest), codec=codec, skip_bad=True, max_samples_per_shard=2, progress=False)
    single = build_shards(BuildConfig(out_dir=str(tmp_path / "single"), **common))
    parts = [tmp_path / "parts" / str(i) for i in range(2)]
    for i, folder in enumerate(parts):
        build_shards(BuildConfig(out_dir=str(folder), part=(i, 2), **common))
    names = [p.name for folder in parts for p in sorted(folder.glob("*.tar"))]
    assert len(set(names)) == len(names) and names[0].startswith("shard-p0000of0002-")

    merged = merge_parts(tmp_path / "merged", list(reversed(parts)))  # any order: merged in part order
    assert split_contents(tmp_path / "merged") == split_contents(tmp_path / "single")
    assert [i for i, _ in split_contents(tmp_path / "merged")] == ["utt0", "utt1", "utt2", "utt3", "utt5", "utt6"]
    assert index_counts(merged) == index_counts(single) == index_counts(load_index(tmp_path / "merged"))
    assert merged["reject_kinds"] == {"missing_file": 1}
    assert merged["pairs"] is single["pairs"] is False  # an ordinary build: objective=dpo refuses it
    rejects = (tmp_path / "merged" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["id"] for r in rejects] == ["utt4"]

    again = merge_parts(tmp_path / "merged", parts)  # idempotent: links already there are kept
    assert index_counts(again) == index_counts(merged)


def test_merge_refuses_parts_of_different_audio_specs(tmp_path):
    manifest = write_codes_manifest(tmp_path / "corpus", [f"u{i}" for i in range(4)])
    other = AudioSpec(codec="dac", sample_rate=16000, frame_rate=25.0, num_codebooks=4, codebook_size=2048)
    for i, spec in enumerate((SPEC, other)):
        build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / str(i)), spec=spec, part=(i, 2),
                                 progress=False))
    with pytest.raises(AudioSpecMismatchError, match=r"codebook_size 1024 vs 2048") as err:
        merge_parts(tmp_path / "merged", [tmp_path / "0", tmp_path / "1"])
    assert f"part {tmp_path / '1'}" in str(err.value)
    assert not (tmp_path / "merged").exists()  # checked before anything is written


def test_merge_refuses_an_id_in_two_parts_naming_it_and_both_parts(tmp_path):
    manifest = write_codes_manifest(tmp_path / "corpus", ["a", "twice", "b", "twice"])  # lines 2 and 4
    for i in range(2):
        build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / str(i)), spec=SPEC, part=(i, 2),
                                 progress=False))
    with pytest.raises(DataError, match=r"sample id 'twice' is in two parts") as err:
        merge_parts(tmp_path / "merged", [tmp_path / "0", tmp_path / "1"])
    assert str(tmp_path / "0") in str(err.value) and str(tmp_path / "1") in str(err.value)


def test_merge_refuses_a_pair_part_with_an_ordinary_part(tmp_path):
    manifest = write_codes_manifest(tmp_path / "corpus", [f"u{i}" for i in range(4)])
    for i in range(2):
        build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / str(i)), spec=SPEC, part=(i, 2),
                                 progress=False))
    index = load_index(tmp_path / "1")
    (tmp_path / "1" / "shards.json").write_text(json.dumps({**index, "pairs": True}))  # as `preferences` marks it
    with pytest.raises(DataError, match="holds preference pairs") as err:
        merge_parts(tmp_path / "merged", [tmp_path / "0", tmp_path / "1"])
    assert f"{tmp_path / '1'} holds preference pairs, {tmp_path / '0'} does not" in str(err.value)


def test_merge_refuses_missing_or_repeated_parts(tmp_path):
    manifest = write_codes_manifest(tmp_path / "corpus", [f"u{i}" for i in range(6)])
    for i in range(3):
        build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / str(i)), spec=SPEC, part=(i, 3),
                                 progress=False))
    with pytest.raises(DataError, match=r"parts \[2\] of 3 are missing"):
        merge_parts(tmp_path / "merged", [tmp_path / "0", tmp_path / "1"])
    with pytest.raises(DataError, match="given twice"):
        merge_parts(tmp_path / "merged", [tmp_path / "0", tmp_path / "1", tmp_path / "1"])
    whole = tmp_path / "whole"
    build_shards(BuildConfig(manifest=str(manifest), out_dir=str(whole), spec=SPEC, progress=False))
    with pytest.raises(DataError, match="is a whole build"):
        merge_parts(tmp_path / "merged", [whole, tmp_path / "0"])


def test_cli_builds_parts_and_merges_them(tmp_path, capsys):
    manifest = write_codes_manifest(tmp_path / "corpus", [f"u{i}" for i in range(5)])
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC.to_dict()))
    build = ["build", "--manifest", str(manifest), "--audio-spec", str(spec_file)]
    assert prepare_data.main([*build, "--out", str(tmp_path / "bad"), "--part", "2/2"]) == 2
    assert "--part '2/2' is not i/N with 0 <= i < N" in capsys.readouterr().err
    for i in range(2):
        assert prepare_data.main([*build, "--out", str(tmp_path / str(i)), "--part", f"{i}/2"]) == 0
    capsys.readouterr()
    merge = ["merge", "--out", str(tmp_path / "merged")]
    assert prepare_data.main([*merge, str(tmp_path / "0"), str(tmp_path / "1")]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 5
    assert prepare_data.main([*merge, str(tmp_path / "1")]) == 2
    assert "parts [0] of 2 are missing" in capsys.readouterr().err


def test_merge_of_parts_holding_no_sample_is_refused_unless_allowed(tmp_path, capsys):
    """Parts of an empty manifest build (a part may be empty), but merging them into a split that trains on
    nothing is refused through the command line, as `build` refuses an empty manifest; --allow-empty writes it."""
    manifest = write_codes_manifest(tmp_path / "corpus", [])
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC.to_dict()), encoding="utf-8")
    parts = [tmp_path / "parts" / str(i) for i in range(2)]
    for i, folder in enumerate(parts):
        assert prepare_data.main(["build", "--manifest", str(manifest), "--out", str(folder), "--audio-spec",
                                  str(spec_file), "--part", f"{i}/2"]) == 0
    capsys.readouterr()
    assert prepare_data.main(["merge", "--out", str(tmp_path / "merged"), *map(str, parts)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "the 2 parts hold no sample: they hold no row" in err, err
    assert not (tmp_path / "merged").exists()
    assert prepare_data.main(["merge", "--allow-empty", "--out", str(tmp_path / "merged"), *map(str, parts)]) == 0
    assert load_index(tmp_path / "merged")["num_samples"] == 0
