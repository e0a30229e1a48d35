import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import webdataset as wds

from higgs_ds.audio_spec import AudioSpec, AudioSpecMismatchError, write_spec
from higgs_ds.codec import CodecConfig, load_codec
from higgs_ds.data.builder import PROGRESS_DIR, BuildConfig, build_shards
from higgs_ds.data.demo import build_seeded_demo_dac
from higgs_ds.data.manifest import BadSampleError
from higgs_ds.data.shards import iter_tar_samples, load_spec, tar_sample_to_utterance

K = 8


@pytest.fixture(scope="module")
def codec_cfg(tmp_path_factory):
    return CodecConfig(path=str(build_seeded_demo_dac(tmp_path_factory.mktemp("codec") / "dac.pth", seed=0)))


def _wav(path: Path, seconds: float, rate: int = 22050, freq: float = 220.0) -> str:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * freq * t), rate)
    return str(path)


def test_dac_codec_encode_decode(codec_cfg, tmp_path):
    codec = load_codec(codec_cfg)  # kind "auto": a weights file is a DAC
    spec = codec.spec
    assert (spec.codec, spec.sample_rate, spec.frame_rate, spec.num_codebooks, spec.codebook_size) == \
        ("dac", 16000, 25.0, 8, 1024)
    assert (spec.stream_bos, spec.stream_eos) == (1024, 1025) and len(spec.codec_sha256) == 64
    a = torch.from_numpy(np.sin(np.arange(22050) / 7.0).astype(np.float32))  # 1 s at 22.05 kHz
    b = torch.from_numpy(np.cos(np.arange(22050) / 5.0).astype(np.float32))
    batched = codec.encode([a, b], 22050)
    assert [c.shape for c in batched] == [(8, 25), (8, 25)]
    assert all(c.min() >= 0 and c.max() < 1024 for c in batched)
    assert torch.equal(codec.encode([b], 22050)[0], batched[1])  # batching equal lengths changes nothing
    assert torch.equal(load_codec(codec_cfg).encode([a], 22050)[0], batched[0])  # seeded weights, deterministic
    assert codec.decode(batched[0]).shape == (16000,)


def _manifest(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _codes_file(tmp_path: Path, name: str, array) -> str:
    np.save(tmp_path / name, np.asarray(array))
    return name


def _good_rows(tmp_path: Path, n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"id": f"utt/{i}", "text": f"جملة رقم {i}", "speaker": f"s{i % 2}"}
        if i % 3 == 0:
            row["audio"] = _wav(tmp_path / f"a{i}.wav", 0.4 + 0.1 * i)
        else:
            codes = np.random.default_rng(i).integers(0, 1024, (K, 10 + i))
            row["codes"] = _codes_file(tmp_path, f"c{i}.npy", codes)
        if i % 2 == 1:
            ref = np.random.default_rng(100 + i).integers(0, 1024, (K, 7))
            row["ref_codes"] = _codes_file(tmp_path, f"r{i}.npy", ref)
            row["ref_text"] = "نص مرجعي"
        rows.append(row)
    return rows


def test_build_shards_readable_and_indexed(codec_cfg, tmp_path):
    rows = _good_rows(tmp_path)
    out = tmp_path / "out"
    cfg = BuildConfig(manifest=_manifest(tmp_path, rows), out_dir=str(out), codec=codec_cfg, max_samples_per_shard=2,
                      progress=False)
    index = build_shards(cfg)
    assert index["num_samples"] == 6 and len(index["shards"]) == 3 and index["rejects"] == 0
    assert index["speakers"] == {"s0": 3, "s1": 3} and load_spec(out) == load_codec(codec_cfg).spec
    shard = out / "shard-000000.tar"
    members = subprocess.run(["tar", "-tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    assert members == ["utt_0.codes.npy", "utt_0.json", "utt_1.codes.npy", "utt_1.json", "utt_1.ref_codes.npy"]
    got = list(wds.WebDataset([str(p) for p in sorted(out.glob("*.tar"))], shardshuffle=False).decode())
    assert [s["json"]["id"] for s in got] == [r["id"] for r in rows]
    utts = [tar_sample_to_utterance(s, load_spec(out)) for p in sorted(out.glob("*.tar")) for s in iter_tar_samples(p)]
    assert utts[0].codes.shape == (K, 10)  # 0.4 s at 25 frames/s
    assert np.array_equal(utts[1].codes, np.load(tmp_path / "c1.npy"))
    assert np.array_equal(utts[1].ref_codes, np.load(tmp_path / "r1.npy"))
    assert utts[1].ref_text == "نص مرجعي" and utts[0].ref_codes is None
    assert sum(s["frames"] for s in index["shards"]) == index["num_frames"] == sum(u.frames for u in utts)


def test_resume_skips_finished_shards(codec_cfg, tmp_path):
    cfg = BuildConfig(manifest=_manifest(tmp_path, _good_rows(tmp_path)), out_dir=str(tmp_path / "out"),
                      codec=codec_cfg, max_samples_per_shard=2, progress=False)
    build_shards(cfg)
    out = Path(cfg.out_dir)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / PROGRESS_DIR / "shard-000001.stats.json").unlink()  # as if interrupted before shard 1 finished
    (out / "shard-000001.tar").unlink()
    index = build_shards(cfg)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    for untouched in ("shard-000000.tar", "shard-000002.tar"):
        assert after[untouched] == before[untouched]
    assert index["num_samples"] == 6 and not list(out.glob("*.tmp"))
    # A different manifest in the same folder is refused rather than mixed in.
    with pytest.raises(RuntimeError, match="different manifest"):
        build_shards(BuildConfig(manifest=_manifest(tmp_path, _good_rows(tmp_path)[:3]), out_dir=cfg.out_dir,
                                 codec=codec_cfg, max_samples_per_shard=2, progress=False))


BAD_CASES = {
    "missing_file": lambda d: {"audio": "nope.wav"},
    "unreadable_audio": lambda d: {"audio": (d / "bad.wav").write_bytes(b"not audio") and "bad.wav"},
    "empty_text": lambda d: {"codes": _codes_file(d, "x.npy", np.zeros((K, 5), int)), "text": " \u0640 "},
    "bad_codes": lambda d: {"codes": _codes_file(d, "x.npy", np.full((K, 5), 1024))},
    "codebook_count": lambda d: {"codes": _codes_file(d, "x.npy", np.zeros((4, 5), int))},
    "ref_mismatch": lambda d: {"codes": _codes_file(d, "x.npy", np.zeros((K, 5), int)),
                               "ref_codes": _codes_file(d, "y.npy", np.zeros((K, 5), int))},
}


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
def test_bad_sample_raises_naming_it_or_is_rejected(codec_cfg, tmp_path, kind):
    rows = _good_rows(tmp_path, 3)
    rows.insert(1, {"id": "the_bad_one", "text": "نص", **BAD_CASES[kind](tmp_path)})
    manifest = _manifest(tmp_path, rows)
    with pytest.raises(BadSampleError, match="manifest.jsonl:2, sample 'the_bad_one'") as err:
        build_shards(BuildConfig(manifest=manifest, out_dir=str(tmp_path / "strict"), codec=codec_cfg, progress=False))
    assert err.value.kind == kind
    index = build_shards(BuildConfig(manifest=manifest, out_dir=str(tmp_path / "lenient"), codec=codec_cfg,
                                     skip_bad=True, progress=False))
    assert index["num_samples"] == 3 and index["rejects"] == 1 and index["reject_kinds"] == {kind: 1}
    rejects = [json.loads(line) for line in (tmp_path / "lenient" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["kind"]) for r in rejects] == [("the_bad_one", kind)]


SPEC = AudioSpec(codec="dac", sample_rate=16000, frame_rate=25.0, num_codebooks=K, codebook_size=1024)


def _prepare(*args, cwd=Path(__file__).parents[2]):
    return subprocess.run([sys.executable, "launch/prepare_data.py", "build", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.integration
def test_cli_reports_bad_sample(tmp_path):
    manifest = _manifest(tmp_path, [{"id": "x", "text": "", "codes": "c.npy"}])
    res = _prepare("--manifest", manifest, "--out", tmp_path / "o", "--audio-spec", write_spec(tmp_path, SPEC))
    assert res.returncode == 2 and "sample 'x': empty 'text'" in res.stderr and "--skip-bad" in res.stderr


@pytest.mark.integration
def test_precomputed_codes_need_a_spec_and_keep_it(tmp_path):
    manifest = _manifest(tmp_path, [{"id": "x", "text": "نص", "codes": _codes_file(tmp_path, "c.npy",
                                                                                   np.zeros((K, 5), int))}])
    res = _prepare("--manifest", manifest, "--out", tmp_path / "o")
    assert res.returncode == 2 and "--audio-spec" in res.stderr and "Traceback" not in res.stderr
    res = _prepare("--manifest", manifest, "--out", tmp_path / "o", "--audio-spec", write_spec(tmp_path, SPEC))
    assert res.returncode == 0, res.stderr
    assert load_spec(tmp_path / "o") == SPEC


def test_a_spec_that_contradicts_the_codec_is_refused(codec_cfg, tmp_path):
    other = AudioSpec(codec="higgs", sample_rate=24000, frame_rate=25.0, num_codebooks=K, codebook_size=1024)
    manifest = _manifest(tmp_path, _good_rows(tmp_path, 2))
    with pytest.raises(AudioSpecMismatchError, match="codec 'higgs' vs 'dac'"):
        build_shards(BuildConfig(manifest=manifest, out_dir=str(tmp_path / "o"), codec=codec_cfg, spec=other,
                                 progress=False))
