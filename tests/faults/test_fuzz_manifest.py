"""Malformed manifest rows thrown at `prepare_data build --skip-bad` (hypothesis): no traceback, every
bad row in rejects.jsonl with its reason, every good row in the shards, good + rejected = total."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from higgs_ds.data.shards import INDEX_NAME, iter_tar_samples
from launch import prepare_data
from tests.harness import output, python, read_jsonl

SPEC = {"codec": "synthetic", "sample_rate": 16000, "frame_rate": 25.0, "num_codebooks": 8, "codebook_size": 1024}
TEXT = "مرحبا بكم في الاختبار"
ROWS_TRIED = []  # rows of every example, for the figure in docs/reliability.md


def _write_inputs(root: Path) -> dict[str, str]:
    """Every kind of file a manifest row can point at, good and bad."""
    rng = np.random.default_rng(0)
    arrays = {
        "good": rng.integers(0, 1024, (8, 30)).astype(np.int16), "good_long": rng.integers(0, 1024, (8, 200)),
        "nan": np.full((8, 5), np.nan), "inf": np.full((8, 5), np.inf), "float": np.ones((8, 5)),
        "negative": np.full((8, 5), -1), "too_big": np.full((8, 5), 1024), "huge": np.full((8, 5), 2**40),
        "k7": rng.integers(0, 1024, (7, 5)), "k9": rng.integers(0, 1024, (9, 5)), "empty": np.zeros((8, 0), np.int16),
        "flat": rng.integers(0, 1024, (40,)), "cube": rng.integers(0, 1024, (8, 5, 2)),
        "objects": np.array([{"a": 1}] * 8, dtype=object),
    }
    paths = {}
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", array, allow_pickle=True)
        paths[name] = str(root / f"{name}.npy")
    (root / "garbage.npy").write_bytes(b"\x93NUMPY garbage" * 10)
    (root / "zero_bytes.npy").write_bytes(b"")
    (root / "folder.npy").mkdir()
    soundfile.write(root / "silent.wav", np.zeros(0, np.float32), 16000)
    (root / "noise.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    (root / "folder.wav").mkdir()
    paths.update({n: str(root / f) for n, f in [("garbage", "garbage.npy"), ("zero_bytes", "zero_bytes.npy"),
                                               ("folder", "folder.npy"), ("silent_wav", "silent.wav"),
                                               ("noise_wav", "noise.wav"), ("folder_wav", "folder.wav")]})
    paths["missing"] = str(root / "missing.npy")
    return paths


# row kind -> (good?, fields of the row besides id). Path values name entries of _write_inputs.
GOOD = {
    "codes": {"text": TEXT, "codes": "good"},
    "codes_long_text": {"text": TEXT * 2000, "codes": "good_long"},
    "with_speaker_scene": {"text": TEXT, "codes": "good", "speaker": "spk", "scene": "قاعة"},
    "with_reference": {"text": TEXT, "codes": "good", "ref_text": TEXT, "ref_codes": "good_long"},
}
BAD = {
    **{f"codes_{n}": {"text": TEXT, "codes": n} for n in (
        "nan", "inf", "float", "negative", "too_big", "huge", "k7", "k9", "empty", "flat", "cube", "objects",
        "garbage", "zero_bytes", "folder", "missing")},
    **{f"audio_{n}": {"text": TEXT, "audio": n} for n in ("silent_wav", "noise_wav", "folder_wav", "missing")},
    "ref_codes_bad": {"text": TEXT, "codes": "good", "ref_text": TEXT, "ref_codes": "nan"},
    "ref_without_text": {"text": TEXT, "codes": "good", "ref_codes": "good"},
    "ref_text_alone": {"text": TEXT, "codes": "good", "ref_text": TEXT},
    "audio_and_codes": {"text": TEXT, "codes": "good", "audio": "noise_wav"},
    "no_audio": {"text": TEXT},
    "no_text": {"codes": "good"},
    "empty_text": {"text": "", "codes": "good"},
    "blank_text": {"text": " \t\u0640 ", "codes": "good"},
    "text_number": {"text": 12, "codes": "good"},
    "text_list": {"text": [TEXT], "codes": "good"},
    "text_surrogate": {"text": "\ud800", "codes": "good"},
    "codes_number": {"text": TEXT, "codes": 5},
    "codes_dict": {"text": TEXT, "codes": {"path": "good"}},
    "speaker_list": {"text": TEXT, "codes": "good", "speaker": ["a"]},
    "extra_field": {"text": TEXT, "codes": "good", "duration": 1.5},
    "path_too_long": {"text": TEXT, "codes": "x" * 5000},
    "path_nul": {"text": TEXT, "codes": "a\x00b.npy"},
}
RAW_BAD = {  # lines that are not JSON objects at all
    "not_json": b'{"id": "x", "text": ',
    "not_utf8": b'{"id": "bad\xff\xfe", "text": "x", "codes": "good.npy"}',
    "json_list": b'["id", "text"]',
    "json_string": b'"just a string"',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "no_id": b'{"text": "x", "codes": "good.npy"}',
    "id_number": b'{"id": 7, "text": "x", "codes": "good.npy"}',
    "id_blank": b'{"id": "  ", "text": "x", "codes": "good.npy"}',
}
KINDS = sorted(GOOD) + sorted(BAD) + sorted(RAW_BAD) + ["duplicate_id"]


def _manifest(kinds: list[str], files: dict[str, str]) -> tuple[bytes, set[int], set[str]]:
    """The manifest bytes, the line numbers of its bad rows and the ids of its good rows."""
    lines, bad, good_ids = [], set(), []
    for i, kind in enumerate(kinds, start=1):
        if kind in RAW_BAD:
            lines.append(RAW_BAD[kind])
            bad.add(i)
            continue
        row, sample_id, good = GOOD.get(kind) or BAD.get(kind), f"row{i}", kind in GOOD
        if kind == "duplicate_id":  # the id of the first good row (a good row itself when there is none yet)
            row, sample_id, good = GOOD["codes"], good_ids[0] if good_ids else sample_id, not good_ids
        record = {"id": sample_id, **{k: files.get(v, v) if isinstance(v, str) and k in (
            "audio", "codes", "ref_audio", "ref_codes") else v for k, v in row.items()}}
        lines.append(json.dumps(record).encode())
        if good:
            good_ids.append(sample_id)
        else:
            bad.add(i)
    return b"\n".join(lines) + b"\n", bad, set(good_ids)


def _check_build(root: Path, kinds: list[str], files: dict[str, str], stdout: str) -> None:
    manifest_bytes, bad_lines, good_ids = _manifest(kinds, files)
    out = root / "shards"
    index = json.loads((out / INDEX_NAME).read_text())
    rejects = read_jsonl(out / "rejects.jsonl")
    rejected_lines = [int(r["where"].rsplit(":", 1)[1]) for r in rejects]
    assert sorted(rejected_lines) == sorted(bad_lines), (kinds, rejects)
    assert all(r["reason"] and r["kind"] for r in rejects)
    keys = {s["__key__"] for shard in index["shards"] for s in iter_tar_samples(out / shard["name"])}
    assert keys == good_ids and index["num_samples"] == len(good_ids)
    assert index["num_samples"] + index["rejects"] == len(kinds) == len(manifest_bytes.splitlines())
    assert json.loads(stdout)["rejects"] == len(bad_lines)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_inputs")
    files = _write_inputs(root)
    (root / "spec.json").write_text(json.dumps(SPEC))
    return root, files


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=25))
def test_build_skip_bad_accounts_for_every_row(inputs, capsys, kinds):
    root, files = inputs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "manifest.jsonl").write_bytes(_manifest(kinds, files)[0])
        capsys.readouterr()  # --allow-empty: an example without a good row is accounted for all the same
        code = prepare_data.main(["build", "--manifest", str(tmp / "manifest.jsonl"), "--out", str(tmp / "shards"),
                                  "--audio-spec", str(root / "spec.json"), "--skip-bad", "--shard-size-mb", "0.01",
                                  "--allow-empty"])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-3000:]
        _check_build(tmp, kinds, files, captured.out)
    ROWS_TRIED.append(len(kinds))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)
FIELDS = ["text", "codes", "speaker", "scene", "ref_text", "ref_codes", "audio", "ref_audio", "extra"]


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), JSON), min_size=1, max_size=12))
def test_any_value_in_any_field_is_either_sharded_or_rejected(inputs, capsys, changes):
    """No oracle: each row (a good one with one field set to an arbitrary JSON value) ends up in exactly
    one place, the shards (by id) or rejects.jsonl (by line)."""
    root, files = inputs
    rows = [{"id": f"row{i}", "text": TEXT, "codes": files["good"], field: value}
            for i, (field, value) in enumerate(changes, start=1)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        capsys.readouterr()
        code = prepare_data.main(["build", "--manifest", str(tmp / "manifest.jsonl"), "--out", str(tmp / "shards"),
                                  "--audio-spec", str(root / "spec.json"), "--skip-bad", "--allow-empty"])
        assert code == 0, capsys.readouterr().err[-3000:]
        index = json.loads((tmp / "shards" / INDEX_NAME).read_text())
        rejected = {int(r["where"].rsplit(":", 1)[1]) for r in read_jsonl(tmp / "shards" / "rejects.jsonl")}
        kept = {int(s["__key__"][3:]) for shard in index["shards"]
                for s in iter_tar_samples(tmp / "shards" / shard["name"])}
        assert not rejected & kept and rejected | kept == set(range(1, len(rows) + 1)), (rows, rejected, kept)
    ROWS_TRIED.append(len(rows))


@pytest.mark.integration
def test_every_kind_of_bad_row_through_the_command_line(inputs, tmp_path):
    """All kinds at once in a real process: exit 0, no traceback, every row accounted for."""
    root, files = inputs
    if ROWS_TRIED:  # the figure in docs/reliability.md (pytest -s)
        print(f"fuzz: {sum(ROWS_TRIED)} rows in {len(ROWS_TRIED)} manifests, every one accounted for")
    kinds = KINDS + ["codes", "duplicate_id"]
    (tmp_path / "manifest.jsonl").write_bytes(_manifest(kinds, files)[0])
    proc = python("launch/prepare_data.py", "build", "--manifest", str(tmp_path / "manifest.jsonl"), "--out",
                  str(tmp_path / "shards"), "--audio-spec", str(root / "spec.json"), "--skip-bad")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, output(proc)
    _check_build(tmp_path, kinds, files, proc.stdout)
    reasons = {r["kind"] for r in read_jsonl(tmp_path / "shards" / "rejects.jsonl")}
    assert {"invalid_utf8", "invalid_json", "bad_type", "bad_codes", "codebook_count", "unreadable_codes",
            "missing_file", "empty_audio", "unreadable_audio", "duplicate_id", "unknown_field"} <= reasons

    # without --skip-bad the first bad row stops the build with one line naming it, exit 2, no traceback
    proc = python("launch/prepare_data.py", "build", "--manifest", str(tmp_path / "manifest.jsonl"), "--out",
                  str(tmp_path / "strict"), "--audio-spec", str(root / "spec.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, output(proc)
    assert "error: manifest.jsonl:" in proc.stderr
