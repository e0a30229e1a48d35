"""Quality filters on any manifest, with a report a person reads before anything is dropped.

Per utterance: duration, clipping ratio (samples at full scale), integrated loudness (LUFS, ITU-R
BS.1770 via pyloudnorm), an SNR estimate, DNSMOS overall quality (speechmos' bundled ONNX models),
speaking rate in characters per second judged per speaker (a robust z-score against the speaker's
own utterances, so a slow and a fast speaker are both kept), and CER against a local Whisper when one is
given. A row failing any threshold goes to rejects.jsonl with every metric it failed, its value and
the threshold. Audio over `max_seconds` is refused from its header before anything is decoded (a
`too_long` reject, as `build` refuses it). The report (filter_report.md) has a table and one histogram
per metric with the threshold marked. `dry_run` writes only the report and metrics.

The SNR estimate is energy based: the 95th over the 10th percentile of 25 ms frame powers, i.e. loud
speech frames over the noise floor between words. It needs pauses in the clip; on a clip with no
pause it reads low, which errs on the side of showing the clip in the report.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.data.importers.common import Accepted, pair_references
from higgs_ds.data.manifest import BadSampleError, ManifestEntry, audio_header, read_manifest
from higgs_ds.data.text import normalize_for_eval
from higgs_ds.errors import ConfigError, DataError
from higgs_ds.output_guard import OutputKind
from higgs_ds.prep.filter_report import write_report
from higgs_ds.quality.models import MODEL_RATE
from higgs_ds.quality.scorer import error_counts
from higgs_ds.quality.signal import resample

log = logging.getLogger(__name__)
_FULL_SCALE = 0.999
_MIN_SPEAKER_ROWS = 5
_MIN_RELATIVE_SPREAD = 0.1  # fewer utterances than this: the speaking-rate z-score uses every speaker's rows
FILTER_OUTPUT = OutputKind("prepare_data filter", files=("metrics.jsonl",))


@dataclass(frozen=True)
class FilterConfig:
    manifest: str
    out: str
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    max_clipping: float = 0.001
    min_lufs: float = -45.0
    min_snr_db: float = 10.0
    min_dnsmos: float = 3.0
    max_rate_z: float = 3.0
    max_cer: float = 0.3
    asr: str | None = None  # local Whisper folder: adds CER
    loudness_target: float | None = None  # LUFS: kept audio is written normalised under out/audio/
    dnsmos: bool = True
    dry_run: bool = False
    ref_pairing: str = "none"  # "same-speaker": kept rows get references anew, within their speaker
    language: str = "ar"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not Path(self.manifest).is_file():
            raise DataError(f"manifest {self.manifest} is not a file", where="--manifest")
        if self.asr and not Path(self.asr).is_dir():
            raise ConfigError(f"{self.asr} is not a local folder", where="--asr",
                              fix="give a Whisper checkpoint folder")
        if self.ref_pairing not in ("none", "same-speaker"):
            raise ConfigError(f"--ref-pairing {self.ref_pairing!r} is not none or same-speaker", where="--ref-pairing")

    def rules(self) -> dict[str, tuple[str, float]]:
        """metric -> ("min" | "max", threshold)"""
        rules = {"seconds": ("min", self.min_seconds), "seconds_max": ("max", self.max_seconds),
                 "clipping": ("max", self.max_clipping), "lufs": ("min", self.min_lufs),
                 "snr_db": ("min", self.min_snr_db), "rate_z": ("max", self.max_rate_z)}
        if self.dnsmos:
            rules["dnsmos"] = ("min", self.min_dnsmos)
        if self.asr:
            rules["cer"] = ("max", self.max_cer)
        return rules


def snr_estimate(wav: np.ndarray, rate: int) -> float:
    frame = max(1, int(0.025 * rate))
    frames = wav[: len(wav) // frame * frame].reshape(-1, frame)
    power = (frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12
    if len(power) < 4:
        return 0.0
    return float(10 * np.log10(np.percentile(power, 95) / np.percentile(power, 10)))


def signal_metrics(wav: np.ndarray, rate: int) -> dict[str, float]:
    import pyloudnorm

    seconds = len(wav) / rate
    lufs = pyloudnorm.Meter(rate).integrated_loudness(wav) if seconds >= 0.4 else -np.inf
    return {"seconds": seconds, "clipping": float(np.mean(np.abs(wav) >= _FULL_SCALE)),
            "lufs": max(float(lufs), -120.0), "snr_db": snr_estimate(wav, rate)}


def rate_z_scores(rows: list[dict]) -> None:
    """Adds `rate_z`: the robust |z| (median and MAD) of characters per second within the speaker, or
    within all rows for a speaker with too few. A robust score, because in a handful of utterances one
    outlier inflates the plain standard deviation enough to hide itself."""
    by_speaker = defaultdict(list)
    for row in rows:
        by_speaker[row["speaker"]].append(row)
    everyone = np.array([r["chars_per_second"] for r in rows])
    for group in by_speaker.values():
        rates = np.array([r["chars_per_second"] for r in group]) if len(group) >= _MIN_SPEAKER_ROWS else everyone
        median = np.median(rates)
        # MAD scaled to a normal's standard deviation, floored at 10% of the median: a very even reader
        # (or a synthetic voice) would otherwise turn natural 5% differences into outliers
        spread = max(1.4826 * np.median(np.abs(rates - median)), _MIN_RELATIVE_SPREAD * median)
        for row in group:
            row["rate_z"] = float(abs(row["chars_per_second"] - median) / spread) if spread > 0 else 0.0


def _read_mono(path: str) -> tuple[np.ndarray, int]:
    wav, rate = soundfile.read(path, always_2d=True, dtype="float32")
    return wav.mean(axis=1), rate


def measure(entries: list[ManifestEntry], cfg: FilterConfig, chunk: int = 16) -> list[dict]:
    dnsmos = asr = None
    if cfg.dnsmos:
        from higgs_ds.quality.models import DnsMos

        dnsmos = DnsMos()
    if cfg.asr:
        from higgs_ds.prep.asr import BatchedWhisper

        asr = BatchedWhisper(cfg.asr, cfg.device, cfg.language, batch_size=chunk)
    rows = []
    for first in range(0, len(entries), chunk):  # a chunk of clips in memory at a time
        batch = entries[first:first + chunk]
        clips = [_read_mono(entry.audio) for entry in batch]
        for entry, (wav, rate) in zip(batch, clips, strict=True):
            row = {"id": entry.id, "where": entry.source, "speaker": entry.speaker or "",
                   **signal_metrics(wav, rate)}
            row["seconds_max"] = row["seconds"]
            letters = len(normalize_for_eval(entry.text).replace(" ", ""))
            row["chars_per_second"] = letters / max(row["seconds"], 1e-3)
            if dnsmos:
                row["dnsmos"] = dnsmos(wav, rate)["dnsmos_ovrl"]
            rows.append(row)
        if asr:
            transcripts = asr.transcribe([resample(wav, rate, MODEL_RATE) for wav, rate in clips])
            for row, entry, (transcript, _) in zip(rows[first:], batch, transcripts, strict=True):
                counts = error_counts(entry.text, transcript)
                row["cer"], row["transcript"] = counts["char_errors"] / max(counts["chars"], 1), transcript
    if rows:
        rate_z_scores(rows)
    return rows


def refuse_long(entries: list[ManifestEntry], max_seconds: float) -> tuple[list[ManifestEntry], list[dict]]:
    """(entries to measure, rejects of those lasting over `max_seconds`), judged from the audio's header as
    `build` judges them, so a recording of hours is refused at once, never decoded. Unreadable or empty
    audio is left to `measure`, which names the file or rejects it by its duration."""
    kept, refused = [], []
    for entry in entries:
        try:
            audio_header(entry, max_seconds=max_seconds)
        except BadSampleError as exc:
            if exc.kind == "too_long":
                refused.append(exc.as_reject())
                continue
        kept.append(entry)
    return kept, refused


def failures(row: dict, rules: dict[str, tuple[str, float]]) -> list[dict]:
    failed = []
    for metric, (rule, threshold) in rules.items():
        value = row[metric]
        if (rule == "min" and value < threshold) or (rule == "max" and value > threshold):
            failed.append({"metric": metric.removesuffix("_max"), "value": round(value, 4), "rule": rule,
                           "threshold": threshold})
    return failed


def filter_manifest(cfg: FilterConfig) -> dict:
    # never the input manifest's folder: its manifest.jsonl would be overwritten by the kept rows
    out = FILTER_OUTPUT.create(FILTER_OUTPUT.check(cfg.out, inputs=(cfg.manifest,)))
    entries, unreadable = read_manifest(cfg.manifest, skip_bad=True)
    unmeasured = [e for e in entries if e.audio is None]  # precomputed codes: nothing to listen to
    entries, too_long = refuse_long([e for e in entries if e.audio is not None], cfg.max_seconds)
    rows = measure(entries, cfg)
    rules = cfg.rules()
    rejects = [dict(row, failed=failed) for row in rows if (failed := failures(row, rules))]
    rejected_ids = {r["id"] for r in rejects}
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    summary = {"rows": len(entries) + len(unmeasured) + len(unreadable) + len(too_long), "measured": len(rows),
               "kept": len(rows) - len(rejected_ids) + len(unmeasured), "rejected": len(rejected_ids),
               "too_long": len(too_long), "unreadable": len(unreadable), "not_measured_codes_only": len(unmeasured),
               "dry_run": cfg.dry_run, "config": asdict(cfg)}
    summary["rejected_by_metric"] = write_report(rows, rejects, rules, out, summary)
    if cfg.dry_run:
        return summary
    with open(out / "rejects.jsonl", "w", encoding="utf-8") as f:
        for reject in unreadable + too_long:
            f.write(json.dumps(reject, ensure_ascii=False) + "\n")
        for reject in rejects:
            f.write(json.dumps({"where": reject["where"], "id": reject["id"], "kind": "quality",
                                "failed": reject["failed"]}, ensure_ascii=False) + "\n")
    kept = [e for e in entries if e.id not in rejected_ids] + unmeasured
    unpaired = _write_manifest(kept, cfg, out)
    if unpaired is not None:
        summary["without_reference"] = unpaired
    return summary


def _write_manifest(kept: list[ManifestEntry], cfg: FilterConfig, out: Path) -> int | None:
    """The kept lines, paths made relative to `out` (audio loudness-normalised when asked). With
    `ref_pairing`, references are drawn anew among the kept rows of each speaker (a rejected row is no
    reference) by the function `import --ref-pairing same-speaker` uses; returns how many got none."""
    with open(cfg.manifest, encoding="utf-8", errors="replace") as f:
        raw_lines = dict(enumerate(f, start=1))
    records = []
    for entry in kept:
        record = json.loads(raw_lines[entry.line])  # parsed before: read_manifest kept it
        for field in ("audio", "codes", "ref_audio", "ref_codes"):
            if getattr(entry, field):
                record[field] = os.path.relpath(getattr(entry, field), out)
        if cfg.loudness_target is not None and entry.audio:
            record["audio"] = _normalised_copy(entry, cfg.loudness_target, out)
        records.append(record)
    unpaired = None
    if cfg.ref_pairing == "same-speaker":
        if any(not r.get("speaker") for r in records):
            raise DataError("--ref-pairing same-speaker needs a speaker on every row", where=cfg.manifest,
                            fix="segment with --speakers diarize (then link-speakers) or --speaker-pattern")
        for record in records:
            for field in ("ref_audio", "ref_codes", "ref_text"):
                record.pop(field, None)
        unpaired = pair_references([Accepted(r, r["id"], 0.0) for r in records], seed=0)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return unpaired


def _normalised_copy(entry: ManifestEntry, target: float, out: Path) -> str:
    import pyloudnorm

    wav, rate = _read_mono(entry.audio)
    loudness = pyloudnorm.Meter(rate).integrated_loudness(wav)
    if np.isfinite(loudness):
        wav = np.clip(pyloudnorm.normalize.loudness(wav, loudness, target), -1.0, 1.0)
    relative = Path("audio") / f"{entry.key}.wav"
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out / relative, wav, rate)
    return str(relative)
