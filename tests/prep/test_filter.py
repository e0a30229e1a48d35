"""`prepare_data filter`: each bad clip is rejected by the metric that catches it, with value and
threshold; clean clips of a slow and a fast speaker are both kept; the report has a histogram per
metric; --dry-run writes nothing but the report."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from higgs_ds.output_guard import MARKER
from higgs_ds.prep.filter import FilterConfig, filter_manifest, rate_z_scores

SENTENCES = ["ذهب الولد إلى المدرسة في الصباح", "الجو جميل اليوم في المدينة", "قرأت كتابا مفيدا عن التاريخ",
             "شكرا لكم على حسن الاستماع", "سافرنا إلى البحر في الصيف", "المكتبة مفتوحة كل يوم"]
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup installs it)")


def _speak(text, path, voice, speed):
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    return soundfile.read(path, dtype="float32")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("filter")
    rng = np.random.default_rng(0)
    lines = []
    for speaker, voice, speed in (("slow", "ar", 120), ("fast", "ar+f2", 230)):
        for i, text in enumerate(SENTENCES):
            _speak(text, folder / f"{speaker}{i}.wav", voice, speed)
            lines.append({"id": f"{speaker}{i}", "audio": f"{speaker}{i}.wav", "text": text, "speaker": speaker})
    wav, rate = soundfile.read(folder / "slow0.wav", dtype="float32")
    bad = {"clipped": np.clip(wav * 30, -1, 1), "noisy": wav + rng.standard_normal(len(wav)).astype("float32") * 0.3,
           "short": wav[: rate // 2], "silent": np.zeros(2 * rate, dtype="float32"), "rushed": wav}
    for name, audio in bad.items():
        soundfile.write(folder / f"{name}.wav", audio, rate)
        text = " ".join([SENTENCES[0]] * 4) if name == "rushed" else SENTENCES[0]
        lines.append({"id": name, "audio": f"{name}.wav", "text": text, "speaker": "slow"})
    np.save(folder / "codes.npy", np.zeros((8, 10), dtype=np.int64))
    lines.append({"id": "precomputed", "codes": "codes.npy", "text": SENTENCES[1]})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n{not json\n")
    return path


def test_each_bad_clip_is_rejected_by_its_metric_and_clean_speakers_are_kept(manifest, tmp_path):
    summary = filter_manifest(FilterConfig(manifest=str(manifest), out=str(tmp_path), min_dnsmos=1.0))
    rejects = {}
    for line in (tmp_path / "rejects.jsonl").read_text().splitlines():
        row = json.loads(line)
        rejects[row["id"]] = {f["metric"] for f in row.get("failed", [])} or {row["kind"]}
    assert rejects.pop(None) == {"invalid_json"}
    assert "clipping" in rejects["clipped"]
    assert "snr_db" in rejects["noisy"]
    assert "seconds" in rejects["short"]
    assert {"lufs", "snr_db"} <= rejects["silent"]
    assert rejects["rushed"] == {"rate_z"}
    assert set(rejects) == {"clipped", "noisy", "short", "silent", "rushed"}  # both speakers' clean clips kept
    kept = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(kept) == 2 * len(SENTENCES) + 1 and kept[-1]["id"] == "precomputed"
    for line in kept:  # paths now relative to the output folder, and still pointing at the files
        assert (tmp_path / (line.get("audio") or line["codes"])).is_file()
    assert summary["rejected"] == 5 and summary["unreadable"] == 1 and summary["not_measured_codes_only"] == 1
    failed = json.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[1])["failed"][0]
    assert set(failed) == {"metric", "value", "rule", "threshold"}
    report = (tmp_path / "filter_report.md").read_text()
    for metric in ("seconds", "clipping", "lufs", "snr_db", "rate_z", "dnsmos"):
        assert f"| {metric} |" in report
    assert all((tmp_path / "report" / f"{m}.png").read_bytes()[:4] == b"\x89PNG"
               for m in ("seconds", "clipping", "lufs", "snr_db", "rate_z", "dnsmos"))


@pytest.mark.integration
def test_dry_run_writes_only_the_report_and_loudness_target_normalises(manifest, tmp_path):
    filter_manifest(FilterConfig(manifest=str(manifest), out=str(tmp_path / "dry"), dnsmos=False, dry_run=True))
    listing = sorted(p.name for p in (tmp_path / "dry").iterdir())
    assert listing == [MARKER, "filter_report.md", "metrics.jsonl", "report"]
    done = subprocess.run([sys.executable, "launch/prepare_data.py", "filter", "--manifest", str(manifest), "--out",
                           str(tmp_path / "loud"), "--no-dnsmos", "--loudness-target", "-20"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import pyloudnorm

    line = json.loads((tmp_path / "loud" / "manifest.jsonl").read_text().splitlines()[0])
    wav, rate = soundfile.read(tmp_path / "loud" / line["audio"])
    assert pyloudnorm.Meter(rate).integrated_loudness(wav) == pytest.approx(-20, abs=0.5)


def test_speaking_rate_is_judged_within_each_speaker():
    rows = [{"speaker": "slow", "chars_per_second": r} for r in (8, 8.5, 9, 8.2, 8.8, 25)]
    rows += [{"speaker": "fast", "chars_per_second": r} for r in (20, 21, 19.5, 20.5, 21.5)]
    rate_z_scores(rows)
    assert [row["rate_z"] > 3 for row in rows] == [False] * 5 + [True] + [False] * 5


def test_a_recording_over_max_seconds_is_refused_from_its_header_never_decoded(tmp_path, monkeypatch, capsys):
    """H6: two hours in a manifest (1 kHz, 8 bits: 7 MB on disk) is a `too_long` reject at once, as in
    `build`, not a clip measured for minutes in gigabytes."""
    import launch.prepare_data as prepare_cli
    from higgs_ds.prep import filter as prep_filter

    t = np.arange(24_000) / 16_000
    soundfile.write(tmp_path / "clip.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16_000)
    soundfile.write(tmp_path / "hours.wav", np.zeros(2 * 3600 * 1000, dtype=np.int16), 1000, subtype="PCM_U8")
    rows = [{"id": "clip", "audio": "clip.wav", "text": SENTENCES[0]},
            {"id": "hours", "audio": "hours.wav", "text": SENTENCES[1]}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    decoded = []
    real = prep_filter._read_mono
    monkeypatch.setattr(prep_filter, "_read_mono", lambda path: decoded.append(path) or real(path))

    assert prepare_cli.main(["filter", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--no-dnsmos",
                             "--max-seconds", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["too_long"] == 1 and summary["measured"] == 1 and summary["rows"] == 2
    assert [p.rsplit("/", 1)[-1] for p in decoded] == ["clip.wav"]
    rejects = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())}
    assert rejects["hours"]["kind"] == "too_long" and "7200 s, over --max-seconds 20" in rejects["hours"]["reason"]
    assert "1 over --max-seconds 20 refused from their headers" in (tmp_path / "out" / "filter_report.md").read_text()
    assert "hours" not in (tmp_path / "out" / "manifest.jsonl").read_text()
