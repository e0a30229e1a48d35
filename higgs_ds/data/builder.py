"""Manifest -> WebDataset shards + ``shards.json``, in parallel, resumable, losing nothing silently.

1. Plan: read the manifest, check every line's structure and estimate its size from file headers;
   cut the entries, in manifest order, into shards of about ``shard_size_mb``. The plan is a pure
   function of the manifest and the settings, and is saved with a fingerprint.
2. Build: worker processes encode/validate each shard's samples and write the tar atomically (temp
   name, then rename), then a per-shard stats file (the completion marker).
3. Index: merge the stats into ``shards.json`` (with the `AudioSpec` of the codes) and all rejects into
   ``rejects.jsonl``.

The spec comes from the codec that encodes the audio; a manifest of precomputed codes states it with
``spec`` (or a codec, whose spec the codes must then fit).

A re-run with the same manifest and settings skips every shard whose stats file exists, so an
interrupted build resumes without re-encoding. The output folder is new or a build's, and never holds
the manifest (``higgs_ds.output_guard``). Bad samples raise :class:`BadSampleError` naming the
sample, or, with ``skip_bad``, are written to ``rejects.jsonl`` and counted in the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import AudioCodec, CodecConfig, load_audio, load_codec
from higgs_ds.data.codec_workers import pin_device, worker_devices
from higgs_ds.data.manifest import BadSampleError, ManifestEntry, estimate_frames, read_manifest
from higgs_ds.data.parts import count_lines, parse_part, part_lines, part_record, shard_name
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import (
    INDEX_NAME,
    utterance_to_tar_sample,
    validate_codes,
    write_json_atomic,
    write_shard,
)
from higgs_ds.errors import ConfigError, DataError
from higgs_ds.output_guard import OutputKind

log = logging.getLogger(__name__)
PROGRESS_DIR = ".build"
# a build re-run into its own folder resumes; a folder from before markers is a build's when it has .build/
BUILD_OUTPUT = OutputKind("prepare_data build", files=(PROGRESS_DIR,))


class DataRebuildError(DataError, RuntimeError):
    """The output folder holds shards of another manifest or other settings: never mixed, never replaced."""


@dataclass(frozen=True)
class BuildConfig:
    manifest: str
    out_dir: str
    codec: CodecConfig | None = None  # required when the manifest has 'audio'/'ref_audio' entries
    spec: AudioSpec | None = None  # what precomputed codes mean; with a codec, it must match the codec's
    shard_size_mb: float = 64.0
    max_samples_per_shard: int = 10_000
    num_workers: int | None = None  # None: one per GPU of codec.device, or 1 (see data/codec_workers.py)
    skip_bad: bool = False
    progress: bool = True
    # Longer audio is a bad sample (read from the header, never decoded): a codec encodes a file in one
    # forward pass, so one multi-hour recording would take all the memory. Segment such files first.
    max_seconds: float = 60.0
    part: tuple[int, int] | None = None  # (i, N): build only part i of N of the manifest (data/parts.py)
    # A build without a sample is refused (training on it could only fail later); a part may be empty
    allow_empty: bool = False

    def __post_init__(self) -> None:
        manifest = Path(self.manifest)
        if manifest.is_dir():
            raise DataError(f"manifest {manifest} is a directory", where="--manifest",
                            fix="give the .jsonl file itself (prepare_data import writes train.jsonl / eval.jsonl)")
        if not manifest.is_file():
            raise DataError(f"manifest {manifest} not found", where="--manifest", fix="check the path")
        if Path(self.out_dir).is_file():
            raise ConfigError(f"{self.out_dir} is a file", where="--out", fix="give a folder for the shards")
        workers = 1 if self.num_workers is None else self.num_workers
        bounds = {"--shard-size-mb": (self.shard_size_mb, 0, "> 0"), "--workers": (workers, 1, ">= 1"),
                  "--max-samples-per-shard": (self.max_samples_per_shard, 1, ">= 1"),
                  "--max-seconds": (self.max_seconds, 0, "> 0")}
        for flag, (value, low, rule) in bounds.items():
            if not (value > low if rule == "> 0" else value >= low):
                raise ConfigError(f"{flag} {value} is out of range", where=flag, fix=f"give a number {rule}")
        if self.part is not None:
            parse_part(f"{self.part[0]}/{self.part[1]}")
        if self.codec is None and self.spec is None:
            raise ConfigError("say what the codes are", where="--codec-path / --audio-spec",
                              fix="a codec (--codec-path, which also encodes audio entries) or, for a manifest of "
                                  "precomputed codes, their audio spec (--audio-spec spec.json)")


def _estimated_bytes(entry: ManifestEntry, frames: int, num_codebooks: int) -> int:
    return frames * num_codebooks * 2 + len(entry.text.encode()) + len((entry.ref_text or "").encode()) + 2048


def plan_shards(entries: list[ManifestEntry], frames: list[int], cfg: BuildConfig,
                num_codebooks: int) -> list[list[int]]:
    """Greedy cut of entry indices, in manifest order, by estimated bytes and sample count."""
    target, plan, current, size = cfg.shard_size_mb * 2**20, [], [], 0
    for i, entry in enumerate(entries):
        est = _estimated_bytes(entry, frames[i], num_codebooks)
        if current and (size + est > target or len(current) >= cfg.max_samples_per_shard):
            plan.append(current)
            current, size = [], 0
        current.append(i)
        size += est
    if current:
        plan.append(current)
    return plan


def _fingerprint(cfg: BuildConfig, spec: AudioSpec, manifest_bytes: bytes) -> str:
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("num_workers", "progress", "out_dir", "manifest", "codec", "spec")}
    settings["spec"] = {k: v for k, v in spec.to_dict().items() if k != "codec_path"}
    return hashlib.sha256(manifest_bytes + json.dumps(settings, sort_keys=True).encode()).hexdigest()


# ---- worker side -------------------------------------------------------------------------------

_WORKER_CODEC: AudioCodec | None = None


def _init_worker(codec_cfg: CodecConfig | None, threads: int, codec: AudioCodec | None = None,
                 devices=None) -> None:
    """``devices``: a queue holding one device per worker process; each takes one at start-up and pins
    it before loading its codec there."""
    global _WORKER_CODEC
    torch.set_num_threads(threads)
    if devices is not None and codec_cfg is not None:
        device = devices.get()
        pin_device(device)
        codec_cfg = replace(codec_cfg, device=device)
    _WORKER_CODEC = codec or (load_codec(codec_cfg) if codec_cfg is not None else None)


def _load_codes(entry: ManifestEntry, path: str, field: str, spec: AudioSpec) -> np.ndarray:
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for broken files
        raise entry.error("unreadable_codes", f"unreadable '{field}' {path}: {exc}") from None
    try:
        return validate_codes(codes, spec.num_codebooks, spec.codebook_size, f"'{field}' {path}")
    except ValueError as exc:
        kind = "codebook_count" if "codebooks" in str(exc) else "bad_codes"
        raise entry.error(kind, str(exc)) from None


def length_batches(lengths: dict[str, int], batch_size: int, max_ratio: float = 1.25) -> list[list[str]]:
    """Keys grouped into batches of at most `batch_size`, shortest first, where the longest clip of a batch
    is at most `max_ratio` times its shortest: padding stays bounded, a long clip never pads short ones."""
    batches: list[list[str]] = []
    for key in sorted(lengths, key=lambda k: (lengths[k], k)):
        batch = batches[-1] if batches else None
        if batch and len(batch) < batch_size and lengths[key] <= max_ratio * max(1, lengths[batch[0]]):
            batch.append(key)
        else:
            batches.append([key])
    return batches


def _encode_audio(entries: list[tuple[ManifestEntry, str, str]],
                  cfg: BuildConfig) -> tuple[dict[str, np.ndarray], dict[str, BadSampleError]]:
    """Encode every distinct audio path of a shard: (path -> int16 codes, path -> failure). The
    caller raises or rejects the samples that use a failed file. Files are decoded one batch of
    similar length at a time, so memory holds one batch of waveforms, not a shard's."""
    if _WORKER_CODEC is None:
        raise entries[0][0].error("no_codec", "manifest has audio but no codec was configured (--codec-path)")
    by_rate: dict[int, dict[str, int]] = {}  # sample rate -> path -> samples, from the headers
    failures: dict[str, BadSampleError] = {}
    first_use = {}
    for entry, path, field in entries:
        if path in first_use:
            continue
        first_use[path] = (entry, field)
        try:
            info = soundfile.info(path)
            by_rate.setdefault(int(info.samplerate), {})[path] = int(info.frames)
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/ValueError
            failures[path] = entry.error("unreadable_audio", f"unreadable '{field}' {path}: {exc}")
    codes = {}
    for rate, lengths in by_rate.items():
        for batch in length_batches(lengths, cfg.codec.batch_size):
            waves = []
            for path in batch:
                entry, field = first_use[path]
                try:
                    wave, file_rate = load_audio(path)
                    if file_rate != rate:
                        raise ValueError(f"header says {rate} Hz, data {file_rate} Hz")
                    waves.append((path, wave))
                except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/ValueError
                    failures[path] = entry.error("unreadable_audio", f"unreadable '{field}' {path}: {exc}")
            if waves:
                encoded = _WORKER_CODEC.encode([w for _, w in waves], rate, batch_size=cfg.codec.batch_size)
                codes.update({p: c.numpy().astype(np.int16) for (p, _), c in zip(waves, encoded, strict=True)})
    return codes, failures


def build_one_shard(shard_idx: int, entries: list[ManifestEntry], cfg: BuildConfig, spec: AudioSpec) -> dict:
    """Encode/validate and write one shard; returns its stats (including rejects)."""
    audio_jobs = [(e, getattr(e, f), f) for e in entries for f in ("audio", "ref_audio") if getattr(e, f)]
    audio_codes, audio_failures = _encode_audio(audio_jobs, cfg) if audio_jobs else ({}, {})
    samples, rejects, speakers, frames, ids = [], [], Counter(), 0, []
    for entry in entries:
        try:
            loaded = {}
            for audio_field, codes_field in (("audio", "codes"), ("ref_audio", "ref_codes")):
                audio_path, codes_path = getattr(entry, audio_field), getattr(entry, codes_field)
                if audio_path is not None:
                    if audio_path in audio_failures:
                        raise entry.error(audio_failures[audio_path].kind, audio_failures[audio_path].reason)
                    loaded[codes_field] = audio_codes[audio_path]
                elif codes_path is not None:
                    loaded[codes_field] = _load_codes(entry, codes_path, codes_field, spec)
        except BadSampleError as exc:
            if not cfg.skip_bad:
                raise
            rejects.append(exc.as_reject())
            continue
        utt = Utterance(id=entry.id, text=entry.text, codes=loaded["codes"], speaker=entry.speaker,
                        scene=entry.scene, ref_text=entry.ref_text, ref_codes=loaded.get("ref_codes"))
        samples.append(utterance_to_tar_sample(entry.key, utt))
        speakers[entry.speaker or "unknown"] += 1
        ids.append(entry.id)
        frames += utt.frames
    path = Path(cfg.out_dir) / shard_name(cfg.part, shard_idx)
    write_shard(path, samples)
    stats = {"name": path.name, "samples": len(samples), "frames": frames, "bytes": path.stat().st_size,
             "speakers": dict(speakers), "rejects": rejects, "ids": ids}  # ids: for merging parts
    write_json_atomic(Path(cfg.out_dir) / PROGRESS_DIR / f"{path.stem}.stats.json", stats)  # completion marker
    return stats


# ---- driver ------------------------------------------------------------------------------------


def resolve_spec(cfg: BuildConfig, device: str | None = None) -> tuple[AudioSpec, AudioCodec | None]:
    """The spec of the shards' codes (and the codec, loaded on ``device``, when there is one)."""
    if cfg.codec is None:
        return cfg.spec, None
    codec = load_codec(replace(cfg.codec, device=device) if device else cfg.codec)
    if cfg.spec is not None:
        cfg.spec.require_match(codec.spec, "--audio-spec", f"codec {cfg.codec.path}")
    return codec.spec, codec


def _prepare_plan(cfg: BuildConfig, spec: AudioSpec, entries: list[ManifestEntry],
                  rejects: list[dict]) -> tuple[list[ManifestEntry], list[list[int]], list[dict]]:
    valid, frames = [], []
    for entry in entries:
        try:
            frames.append(estimate_frames(entry, spec.frame_rate, cfg.max_seconds))
            valid.append(entry)
        except BadSampleError as exc:
            if not cfg.skip_bad:
                raise
            rejects.append(exc.as_reject())
    return valid, plan_shards(valid, frames, cfg, spec.num_codebooks), rejects


def build_shards(cfg: BuildConfig) -> dict:
    """Build (or finish building) the shards of one manifest; returns the written index."""
    out = BUILD_OUTPUT.check(cfg.out_dir, inputs=(cfg.manifest,))
    lines = part_lines(count_lines(cfg.manifest), cfg.part) if cfg.part else None
    manifest_rows = read_manifest(cfg.manifest, cfg.skip_bad, lines)  # a bad line fails before the codec loads
    refuse_empty(cfg, len(manifest_rows[0]), Counter(r["kind"] for r in manifest_rows[1]))
    # worker i encodes on devices[i]; checked before anything loads
    devices = worker_devices(cfg.codec.device, cfg.num_workers) if cfg.codec else ["cpu"] * (cfg.num_workers or 1)
    spec, codec = resolve_spec(cfg, devices[0])
    entries, plan, plan_rejects = _prepare_plan(cfg, spec, *manifest_rows)
    refuse_empty(cfg, len(entries), Counter(r["kind"] for r in plan_rejects))  # before the output folder is made
    (BUILD_OUTPUT.create(out) / PROGRESS_DIR).mkdir(exist_ok=True)  # only now: bad input leaves no folder behind
    fingerprint = _fingerprint(cfg, spec, Path(cfg.manifest).read_bytes())
    plan_path = out / PROGRESS_DIR / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text())["fingerprint"] != fingerprint:
        raise DataRebuildError(f"{out} holds shards built from a different manifest or settings", where="--out",
                               fix="remove it or choose another output folder")
    write_json_atomic(plan_path, {"fingerprint": fingerprint, "shards": [[entries[i].id for i in s] for s in plan]})

    stats_path = lambda idx: out / PROGRESS_DIR / f"{Path(shard_name(cfg.part, idx)).stem}.stats.json"  # noqa: E731
    pending = [idx for idx in range(len(plan)) if not stats_path(idx).is_file()]
    if len(pending) < len(plan):
        log.info("resuming %s: %d of %d shards already built", out, len(plan) - len(pending), len(plan))
    start = time.time()
    bar = tqdm(total=sum(len(plan[i]) for i in pending), unit="sample", desc=f"shards -> {out.name}",
               disable=not cfg.progress)
    workers = min(len(devices), max(1, len(pending)))
    if workers == 1:
        _init_worker(cfg.codec, max(1, torch.get_num_threads()), codec)
        for idx in pending:
            build_one_shard(idx, [entries[i] for i in plan[idx]], cfg, spec)
            bar.update(len(plan[idx]))
    elif pending:
        del codec  # each worker process loads its own
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn: a forked torch runtime with live threads can deadlock.
        context = get_context("spawn")
        device_queue = context.SimpleQueue()
        for device in devices[:workers]:
            device_queue.put(device)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(cfg.codec, threads, None, device_queue)) as pool:
            futures = {pool.submit(build_one_shard, idx, [entries[i] for i in plan[idx]], cfg, spec): idx
                       for idx in pending}
            for future in as_completed(futures):
                try:
                    future.result()  # re-raises BadSampleError naming the sample
                except BrokenProcessPool as exc:
                    raise RuntimeError(
                        f"a worker process died while building shard {futures[future]} of {out} (killed by the "
                        "system, most often for lack of memory: try fewer --workers); run the same command "
                        "again to continue, finished shards are kept") from exc
                bar.update(len(plan[futures[future]]))
    bar.close()
    log.info("built %d shards in %.1fs", len(pending), time.time() - start)
    index = write_index(out, [json.loads(stats_path(i).read_text()) for i in range(len(plan))], plan_rejects, spec,
                        part_record(cfg.manifest, cfg.part, lines) if cfg.part else None)
    refuse_empty(cfg, index["num_samples"], Counter(index["reject_kinds"]), written=out / "rejects.jsonl")
    return index


def refuse_empty(cfg: BuildConfig, samples: int, rejects: Counter, written: Path | None = None) -> None:
    """A build that would hold no sample is an error unless `allow_empty` (or it is one part of several).
    `rejects`: kind -> rows rejected; `written`: the rejects.jsonl already written, if any."""
    if samples or cfg.allow_empty or cfg.part is not None:
        return
    kinds = ", ".join(f"{kind}: {n}" for kind, n in rejects.most_common())
    why = (f"every row was rejected ({kinds}{f'; see {written}' if written else ''})" if rejects
           else "it holds no row")
    raise DataError(f"manifest {cfg.manifest} gives no sample to build: {why}", where="--manifest",
                    fix="give a manifest with at least one usable row, or pass --allow-empty to write an empty "
                        "shard set on purpose")


def write_index(out: Path, shard_stats: list[dict], plan_rejects: list[dict], spec: AudioSpec,
                part: dict | None = None, pairs: bool = False) -> dict:
    """``shards.json`` and ``rejects.jsonl`` of a finished split; `pairs`: its samples are preference pairs
    (what `objective=dpo` trains on; preflight reads it)."""
    rejects = plan_rejects + [r for s in shard_stats for r in s["rejects"]]
    speakers = Counter()
    for s in shard_stats:
        speakers.update(s["speakers"])
    frames = sum(s["frames"] for s in shard_stats)
    index = {
        "version": 2,
        "num_samples": sum(s["samples"] for s in shard_stats),
        "num_frames": frames,
        "audio_spec": spec.to_dict(),
        "pairs": pairs,
        "speakers": dict(sorted(speakers.items())),
        "rejects": len(rejects),
        "reject_kinds": dict(Counter(r["kind"] for r in rejects)),
        "shards": [{k: s[k] for k in ("name", "samples", "frames", "bytes", "speakers")} for s in shard_stats],
    }
    if part is not None:
        index["part"] = part
    with open(out / "rejects.jsonl.tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    (out / "rejects.jsonl.tmp").replace(out / "rejects.jsonl")
    write_json_atomic(out / INDEX_NAME, index)
    return index
