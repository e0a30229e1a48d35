"""A multi-hour recording in a manifest cannot take a build down: it is refused from its header at
planning time (never decoded), and codec batches group clips of similar length so one long clip never
pads the short ones."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
import soundfile

import higgs_ds.data.builder as builder
from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards, length_batches
from higgs_ds.data.demo import build_seeded_demo_dac
from higgs_ds.data.manifest import BadSampleError

HOUR = 3600


@pytest.fixture(scope="module")
def codec_cfg(tmp_path_factory):
    return CodecConfig(path=str(build_seeded_demo_dac(tmp_path_factory.mktemp("codec") / "dac.pth", seed=0)))


def _manifest(folder: Path) -> Path:
    """Three 1 s clips and one hour of audio (1 kHz, 8 bits: 3.6 MB on disk, ~0.9 GB once encoded)."""
    rows = []
    for i in range(3):
        t = np.arange(16000) / 16000
        soundfile.write(folder / f"short{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t), 16000)
        rows.append({"id": f"short{i}", "text": "مرحبا بكم", "audio": f"short{i}.wav"})
    soundfile.write(folder / "hour.wav", np.zeros(HOUR * 1000, dtype=np.int16), 1000, subtype="PCM_U8")
    rows.insert(2, {"id": "hour", "text": "تسجيل طويل", "audio": "hour.wav"})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The paths the builder decodes."""
    paths = []

    def spy(path):
        paths.append(Path(path).name)
        return real(path)

    real = builder.load_audio
    monkeypatch.setattr(builder, "load_audio", spy)
    return paths


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_an_hour_long_file_is_rejected_from_its_header_never_decoded(codec_cfg, tmp_path, decoded):
    manifest = _manifest(tmp_path)
    peak_before = _peak_rss_mib()
    index = build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / "shards"), codec=codec_cfg,
                                     skip_bad=True, progress=False))
    growth = _peak_rss_mib() - peak_before
    assert index["num_samples"] == 3 and index["reject_kinds"] == {"too_long": 1}
    reject = json.loads((tmp_path / "shards" / "rejects.jsonl").read_text())
    assert reject["id"] == "hour" and "segment" in reject["reason"] and "--max-seconds 60" in reject["reason"]
    assert sorted(decoded) == ["short0.wav", "short1.wav", "short2.wav"]
    assert growth < 300, f"peak RSS grew {growth:.0f} MiB for three 1 s clips"

    decoded.clear()
    with pytest.raises(BadSampleError, match="manifest.jsonl:3, sample 'hour'.*3600 s, over --max-seconds 60") as err:
        build_shards(BuildConfig(manifest=str(manifest), out_dir=str(tmp_path / "strict"), codec=codec_cfg,
                                 progress=False))
    assert err.value.kind == "too_long" and not decoded and not (tmp_path / "strict").exists()


def test_max_seconds_lets_a_long_file_through_when_raised(codec_cfg, tmp_path, decoded):
    soundfile.write(tmp_path / "a.wav", np.zeros(2 * 16000, dtype=np.float32), 16000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "نص", "audio": "a.wav"}) + "\n")
    cfg = dict(manifest=str(tmp_path / "m.jsonl"), codec=codec_cfg, progress=False)
    with pytest.raises(BadSampleError, match="too_long|over --max-seconds 1"):
        build_shards(BuildConfig(out_dir=str(tmp_path / "capped"), max_seconds=1, **cfg))
    assert build_shards(BuildConfig(out_dir=str(tmp_path / "ok"), max_seconds=3, **cfg))["num_samples"] == 1


def test_codec_batches_group_similar_lengths():
    lengths = {"a": 100, "b": 110, "c": 120, "d": 3_600_000, "e": 105, "f": 1000, "g": 1200}
    batches = length_batches(lengths, batch_size=8)
    assert batches == [["a", "e", "b", "c"], ["f", "g"], ["d"]]  # the long clip pads nobody
    assert length_batches(lengths, batch_size=2) == [["a", "e"], ["b", "c"], ["f", "g"], ["d"]]
    for batch in batches:
        assert max(lengths[k] for k in batch) <= 1.25 * min(lengths[k] for k in batch)
