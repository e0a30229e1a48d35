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
interrupted build resumes without re-encoding. Bad samples raise :class:`BadSampleError` naming the
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
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import AudioCodec, CodecConfig, load_audio, load_codec
from higgs_ds.data.manifest import BadSampleError, ManifestEntry, estimate_frames, read_manifest
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import (
    INDEX_NAME,
    SHARD_NAME,
    utterance_to_tar_sample,
    validate_codes,
    write_json_atomic,
    write_shard,
)

log = logging.getLogger(__name__)
PROGRESS_DIR = ".build"


@dataclass(frozen=True)
class BuildConfig:
    manifest: str
    out_dir: str
    codec: CodecConfig | None = None  # required when the manifest has 'audio'/'ref_audio' entries
    spec: AudioSpec | None = None  # what precomputed codes mean; with a codec, it must match the codec's
    shard_size_mb: float = 64.0
    max_samples_per_shard: int = 10_000
    num_workers: int = 1
    skip_bad: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not Path(self.manifest).is_file():
            raise FileNotFoundError(f"manifest {self.manifest} not found")
        if self.shard_size_mb <= 0 or self.max_samples_per_shard < 1 or self.num_workers < 1:
            raise ValueError(f"invalid build config: {self}")
        if self.codec is None and self.spec is None:
            raise ValueError("say what the codes are: a codec (--codec-path, which also encodes audio entries) or, "
                             "for a manifest of precomputed codes, their audio spec (--audio-spec spec.json)")


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


def _init_worker(codec_cfg: CodecConfig | None, threads: int, codec: AudioCodec | None = None) -> None:
    global _WORKER_CODEC
    torch.set_num_threads(threads)
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


def _encode_audio(entries: list[tuple[ManifestEntry, str, str]],
                  cfg: BuildConfig) -> tuple[dict[str, np.ndarray], dict[str, BadSampleError]]:
    """Encode every distinct audio path of a shard: (path -> int16 codes, path -> failure). The
    caller raises or rejects the samples that use a failed file."""
    if _WORKER_CODEC is None:
        raise entries[0][0].error("no_codec", "manifest has audio but no codec was configured (--codec-path)")
    waves: dict[int, list[tuple[str, torch.Tensor]]] = {}  # grouped by sample rate
    failures: dict[str, BadSampleError] = {}
    seen: set[str] = set()
    for entry, path, field in entries:
        if path in seen:
            continue
        seen.add(path)
        try:
            wave, rate = load_audio(path)
            waves.setdefault(rate, []).append((path, wave))
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/ValueError
            failures[path] = entry.error("unreadable_audio", f"unreadable '{field}' {path}: {exc}")
    codes = {}
    for rate, group in waves.items():
        encoded = _WORKER_CODEC.encode([w for _, w in group], rate, batch_size=cfg.codec.batch_size)
        codes.update({path: c.numpy().astype(np.int16) for (path, _), c in zip(group, encoded, strict=True)})
    return codes, failures


def build_one_shard(shard_idx: int, entries: list[ManifestEntry], cfg: BuildConfig, spec: AudioSpec) -> dict:
    """Encode/validate and write one shard; returns its stats (including rejects)."""
    audio_jobs = [(e, getattr(e, f), f) for e in entries for f in ("audio", "ref_audio") if getattr(e, f)]
    audio_codes, audio_failures = _encode_audio(audio_jobs, cfg) if audio_jobs else ({}, {})
    samples, rejects, speakers, frames = [], [], Counter(), 0
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
        frames += utt.frames
    path = Path(cfg.out_dir) / SHARD_NAME.format(shard_idx)
    write_shard(path, samples)
    stats = {"name": path.name, "samples": len(samples), "frames": frames, "bytes": path.stat().st_size,
             "speakers": dict(speakers), "rejects": rejects}
    write_json_atomic(Path(cfg.out_dir) / PROGRESS_DIR / f"{path.stem}.stats.json", stats)  # completion marker
    return stats


# ---- driver ------------------------------------------------------------------------------------


def resolve_spec(cfg: BuildConfig) -> tuple[AudioSpec, AudioCodec | None]:
    """The spec of the shards' codes (and the loaded codec, when there is one)."""
    if cfg.codec is None:
        return cfg.spec, None
    codec = load_codec(cfg.codec)
    if cfg.spec is not None:
        cfg.spec.require_match(codec.spec, "--audio-spec", f"codec {cfg.codec.path}")
    return codec.spec, codec


def _prepare_plan(cfg: BuildConfig, spec: AudioSpec) -> tuple[list[ManifestEntry], list[list[int]], list[dict]]:
    entries, rejects = read_manifest(cfg.manifest, cfg.skip_bad)
    valid, frames = [], []
    for entry in entries:
        try:
            frames.append(estimate_frames(entry, spec.frame_rate))
            valid.append(entry)
        except BadSampleError as exc:
            if not cfg.skip_bad:
                raise
            rejects.append(exc.as_reject())
    return valid, plan_shards(valid, frames, cfg, spec.num_codebooks), rejects


def build_shards(cfg: BuildConfig) -> dict:
    """Build (or finish building) the shards of one manifest; returns the written index."""
    out = Path(cfg.out_dir)
    (out / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    spec, codec = resolve_spec(cfg)
    entries, plan, plan_rejects = _prepare_plan(cfg, spec)
    fingerprint = _fingerprint(cfg, spec, Path(cfg.manifest).read_bytes())
    plan_path = out / PROGRESS_DIR / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text())["fingerprint"] != fingerprint:
        raise RuntimeError(f"{out} holds shards built from a different manifest or settings; "
                           "remove it or choose another output folder")
    write_json_atomic(plan_path, {"fingerprint": fingerprint, "shards": [[entries[i].id for i in s] for s in plan]})

    stats_path = lambda idx: out / PROGRESS_DIR / f"{Path(SHARD_NAME.format(idx)).stem}.stats.json"  # noqa: E731
    pending = [idx for idx in range(len(plan)) if not stats_path(idx).is_file()]
    if len(pending) < len(plan):
        log.info("resuming %s: %d of %d shards already built", out, len(plan) - len(pending), len(plan))
    start = time.time()
    bar = tqdm(total=sum(len(plan[i]) for i in pending), unit="sample", desc=f"shards -> {out.name}",
               disable=not cfg.progress)
    workers = min(cfg.num_workers, max(1, len(pending)))
    if workers == 1:
        _init_worker(cfg.codec, max(1, torch.get_num_threads()), codec)
        for idx in pending:
            build_one_shard(idx, [entries[i] for i in plan[idx]], cfg, spec)
            bar.update(len(plan[idx]))
    elif pending:
        del codec  # each worker process loads its own
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn: a forked torch runtime with live threads can deadlock.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(cfg.codec, threads)) as pool:
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
    return write_index(out, [json.loads(stats_path(i).read_text()) for i in range(len(plan))], plan_rejects, spec)


def write_index(out: Path, shard_stats: list[dict], plan_rejects: list[dict], spec: AudioSpec) -> dict:
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
        "speakers": dict(sorted(speakers.items())),
        "rejects": len(rejects),
        "reject_kinds": dict(Counter(r["kind"] for r in rejects)),
        "shards": [{k: s[k] for k in ("name", "samples", "frames", "bytes", "speakers")} for s in shard_stats],
    }
    with open(out / "rejects.jsonl.tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    (out / "rejects.jsonl.tmp").replace(out / "rejects.jsonl")
    write_json_atomic(out / INDEX_NAME, index)
    return index
