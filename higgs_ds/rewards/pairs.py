"""Preference pairs for offline DPO: N candidates per prompt from a run or export, scored with the rewards,
the best kept as `codes` (chosen) and the worst as `rejected_codes`, written as shards.

    prepare_data preferences --from runs/sft --manifest prompts.jsonl --candidates 8 \\
        --rewards cer=1,sim=1,stop=0.5 --whisper /models/whisper --out data/pairs [--part i/N]

The manifest is a training manifest (docs/data.md) whose target audio is optional and never read: each row
gives the text, and optionally a scene and a reference voice (`ref_text` with `ref_audio` or `ref_codes`).
The N candidates of a prompt are one batched generation seeded with `seed + manifest line`, so a prompt's
candidates do not depend on how the work was split into parts. Each pair's JSON holds every score:
`chosen_scores` / `rejected_scores` (reward name -> value, null where the reward left the sample out),
`chosen_reward` / `rejected_reward` (the weighted sums), every candidate's weighted reward, the seed and
the chosen and rejected candidates' indices.

Prompts whose candidates tie (best minus worst <= `min_margin`) and prompts with fewer than two non-empty
candidates give no pair: they are counted as rejects (`tied_candidates`, `empty_candidates`) in
`rejects.jsonl` and `shards.json`, so `merge` adds them up across parts like a build's rejects.

The folder has a build's layout (`.build/` stats per shard, `shards.json` with the part record), so it
resumes shard by shard and `prepare_data merge` joins the parts of a split run. It is new or this command's
own, and never one of its inputs (`higgs_ds.output_guard`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import load_audio
from higgs_ds.data.builder import PROGRESS_DIR, write_index
from higgs_ds.data.manifest import BadSampleError, ManifestEntry, read_manifest
from higgs_ds.data.parts import count_lines, part_lines, part_record, shard_name
from higgs_ds.data.schema import Utterance
from higgs_ds.data.shards import utterance_to_tar_sample, validate_codes, write_json_atomic, write_shard
from higgs_ds.device import resolve_device, resolve_precision, torch_dtype
from higgs_ds.errors import CheckpointError, ConfigError, DataError
from higgs_ds.inference import GenerationConfig, TTSRequest
from higgs_ds.inference.loading import audio_spec_of
from higgs_ds.output_guard import OutputKind
from higgs_ds.rewards.base import RewardSet, build_rewards
from higgs_ds.rewards.candidates import Sampler, load_sampler, rank, scores_of
from higgs_ds.rewards.preflight import check_rewards

log = logging.getLogger(__name__)
PAIRS_OUTPUT = OutputKind("prepare_data preferences")


@dataclass(frozen=True)
class PairsConfig:
    source: str  # a run, checkpoint tag or exported folder
    manifest: str  # prompts (a training manifest; target audio optional)
    out_dir: str
    rewards: dict[str, float]  # name -> weight
    candidates: int = 8
    context: dict = field(default_factory=dict)  # the rewards' context (docs/rewards.md)
    generation: GenerationConfig = GenerationConfig()
    seed: int = 0  # a prompt's candidates: seed + its manifest line
    min_margin: float = 0.0  # a prompt whose best and worst differ by no more gives no pair
    part: tuple[int, int] | None = None
    tag: str | None = None
    tokenizer: str | None = None
    codec_path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    prompts_per_shard: int = 256
    skip_bad: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        manifest = Path(self.manifest)
        if not manifest.is_file():
            raise DataError(f"manifest {manifest} not found", where="--manifest", fix="give the prompts' .jsonl file")
        if not Path(self.source).is_dir():
            raise CheckpointError(f"{self.source} is not a folder", where="--from",
                                  fix="give a run dir, a checkpoint tag dir or an exported dir")
        if self.candidates < 2:
            raise ConfigError(f"--candidates {self.candidates} makes no pair", where="--candidates",
                              fix="give 2 or more")
        if self.generation.greedy:
            raise ConfigError("greedy decoding makes N equal candidates", where="--temperature",
                              fix="sample (temperature > 0)")
        if self.min_margin < 0 or self.prompts_per_shard < 1:
            raise ConfigError(f"--min-margin {self.min_margin} must be >= 0 and --prompts-per-shard "
                              f"{self.prompts_per_shard} >= 1", where="--min-margin / --prompts-per-shard")


def _fingerprint(cfg: PairsConfig) -> str:
    """What the shards depend on: the manifest, the checkpoint and every setting that changes a pair."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "manifest", "progress", "device",
                                                                  "dtype", "skip_bad", "context")}
    settings["source"] = str(Path(cfg.source).resolve())
    settings["context"] = {k: v for k, v in cfg.context.items() if k not in ("device", "dnsmos_threads")}
    return hashlib.sha256(Path(cfg.manifest).read_bytes() + json.dumps(settings, sort_keys=True,
                                                                        default=str).encode()).hexdigest()


@dataclass
class _Counts:
    left_out: Counter = field(default_factory=Counter)  # reward -> candidates it did not score
    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)


class _PairMaker:
    """One prompt -> a pair Utterance (or a reject), with the loaded sampler and rewards."""

    def __init__(self, cfg: PairsConfig, sampler: Sampler, rewards: RewardSet) -> None:
        self.cfg, self.sampler, self.rewards, self.counts = cfg, sampler, rewards, _Counts()

    def _reference(self, entry: ManifestEntry) -> tuple[np.ndarray | None, tuple[np.ndarray, int] | None]:
        """The prompt's reference voice: (codes for the prompt, its recording when there is one)."""
        spec = self.sampler.spec
        if entry.ref_codes is not None:
            try:
                codes = np.load(entry.ref_codes, allow_pickle=False)
                what = f"'ref_codes' {entry.ref_codes}"
                return validate_codes(codes, spec.num_codebooks, spec.codebook_size, what), None
            except ValueError as exc:  # numpy's own errors for a broken file are ValueErrors too
                raise entry.error("bad_codes", str(exc)) from None
        if entry.ref_audio is not None:
            try:
                wav, sr = load_audio(entry.ref_audio)
            except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError
                raise entry.error("unreadable_audio", f"unreadable 'ref_audio' {entry.ref_audio}: {exc}") from None
            return self.sampler.codec.encode([wav], sr)[0].numpy().astype(np.int16), (wav.numpy(), sr)
        return None, None

    def __call__(self, entry: ManifestEntry) -> Utterance:
        cfg, n = self.cfg, self.cfg.candidates
        ref_codes, ref_wav = self._reference(entry)
        request = TTSRequest(entry.text, scene=entry.scene, ref_text=entry.ref_text if ref_codes is not None else None,
                             ref_codes=ref_codes, id=entry.id)
        seed = cfg.seed + entry.line
        result = self.sampler.sample([request] * n, replace(cfg.generation, seed=seed))  # one batch of N copies
        samples = self.sampler.reward_samples(
            result.codes, result.finished, [entry.text] * n, self.rewards.needs_audio,
            reference_codes=[ref_codes] * n if ref_codes is not None and ref_wav is None else None,
            reference_audio=[ref_wav[0]] * n if ref_wav else None, reference_rate=ref_wav[1] if ref_wav else None)
        scored = self.rewards.score(samples)
        self.counts.left_out.update(scored.left_out)
        usable = np.array([c.shape[1] > 0 for c in result.codes])
        if usable.sum() < 2:
            raise entry.error("empty_candidates", f"{int(usable.sum())} of {n} candidates (seed {seed}) hold any "
                                                  "frame: no pair")
        best, worst = rank(scored.total, usable)
        margin = float(scored.total[best] - scored.total[worst])
        if margin <= cfg.min_margin:
            raise entry.error("tied_candidates", f"the {n} candidates (seed {seed}) tie: best minus worst reward "
                                                 f"{margin:.6g} <= --min-margin {cfg.min_margin:g}")
        self.counts.chosen.append(float(scored.total[best]))
        self.counts.rejected.append(float(scored.total[worst]))
        meta = {"chosen_scores": scores_of(scored, best), "rejected_scores": scores_of(scored, worst),
                "chosen_reward": float(scored.total[best]), "rejected_reward": float(scored.total[worst]),
                "chosen_finished": bool(result.finished[best]), "rejected_finished": bool(result.finished[worst]),
                "seed": seed, "candidates": n, "chosen_index": best, "rejected_index": worst,
                "candidate_rewards": [float(t) for t in scored.total]}
        return Utterance(id=entry.id, text=entry.text, codes=result.codes[best].numpy().astype(np.int16),
                         speaker=entry.speaker, scene=entry.scene, ref_text=request.ref_text, ref_codes=ref_codes,
                         meta=meta, rejected_codes=result.codes[worst].numpy().astype(np.int16))


def _write_pair_shard(out: Path, idx: int, entries: list[ManifestEntry], make: _PairMaker, cfg: PairsConfig,
                      bar: tqdm) -> dict:
    samples, rejects, speakers, frames, ids = [], [], Counter(), 0, []
    for entry in entries:
        try:
            utt = make(entry)
        except BadSampleError as exc:
            if exc.kind not in ("tied_candidates", "empty_candidates") and not cfg.skip_bad:
                raise
            rejects.append(exc.as_reject())
        else:
            samples.append(utterance_to_tar_sample(entry.key, utt))
            speakers[entry.speaker or "unknown"] += 1
            ids.append(entry.id)
            frames += utt.frames
        bar.update(1)
    path = out / shard_name(cfg.part, idx)
    write_shard(path, samples)
    stats = {"name": path.name, "samples": len(samples), "frames": frames, "bytes": path.stat().st_size,
             "speakers": dict(speakers), "rejects": rejects, "ids": ids,
             "left_out": dict(make.counts.left_out), "chosen_reward": make.counts.chosen,
             "rejected_reward": make.counts.rejected}
    make.counts = _Counts()
    write_json_atomic(out / PROGRESS_DIR / f"{path.stem}.stats.json", stats)  # the shard's completion marker
    return stats


def build_pairs(cfg: PairsConfig) -> dict:
    """Generate, score and write the pairs of the manifest (or of its part); returns a summary."""
    out = PAIRS_OUTPUT.check(cfg.out_dir, inputs=(cfg.manifest, cfg.source))
    check_rewards(cfg.rewards, cfg.context)  # files only, before the model loads
    lines = part_lines(count_lines(cfg.manifest), cfg.part) if cfg.part else None
    entries, plan_rejects = read_manifest(cfg.manifest, cfg.skip_bad, lines, need_target=False)
    if not entries and cfg.part is None:
        raise DataError(f"manifest {cfg.manifest} holds no usable prompt", where="--manifest",
                        fix="give at least one row with a text")
    if audio_spec_of(cfg.source, cfg.tag) is None:
        raise CheckpointError(f"{cfg.source} has no trained audio side (a plain Llama checkpoint)", where="--from",
                              fix="give a higgs-ds run or export")
    device = resolve_device(cfg.device)
    sampler = load_sampler(cfg.source, cfg.tag, device, torch_dtype(resolve_precision(cfg.dtype, device)),
                           cfg.tokenizer, cfg.codec_path)
    make = _PairMaker(cfg, sampler, build_rewards(cfg.rewards, cfg.context))
    progress = PAIRS_OUTPUT.create(out) / PROGRESS_DIR
    progress.mkdir(exist_ok=True)
    fingerprint, plan_path = _fingerprint(cfg), progress / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text())["fingerprint"] != fingerprint:
        raise DataError(f"{out} holds pairs of another manifest, checkpoint or settings", where="--out",
                        fix="remove it or choose another output folder")
    chunks = [entries[i: i + cfg.prompts_per_shard] for i in range(0, len(entries), cfg.prompts_per_shard)]
    write_json_atomic(plan_path, {"fingerprint": fingerprint, "shards": [[e.id for e in c] for c in chunks]})
    stats_path = lambda idx: progress / f"{Path(shard_name(cfg.part, idx)).stem}.stats.json"  # noqa: E731
    pending = [idx for idx in range(len(chunks)) if not stats_path(idx).is_file()]
    if len(pending) < len(chunks):
        log.info("resuming %s: %d of %d shards already written", out, len(chunks) - len(pending), len(chunks))
    with tqdm(total=sum(len(chunks[i]) for i in pending), unit="prompt", desc=f"pairs -> {out.name}",
              disable=not cfg.progress) as bar:
        for idx in pending:
            _write_pair_shard(out, idx, chunks[idx], make, cfg, bar)
    stats = [json.loads(stats_path(i).read_text()) for i in range(len(chunks))]
    index = write_index(out, stats, plan_rejects, sampler.spec,
                        part_record(cfg.manifest, cfg.part, lines) if cfg.part else None, pairs=True)
    return _summary(index, stats, cfg, len(entries) + len(plan_rejects), sampler.spec)


def _summary(index: dict, stats: list[dict], cfg: PairsConfig, prompts: int, spec: AudioSpec) -> dict:
    chosen = [r for s in stats for r in s["chosen_reward"]]
    rejected = [r for s in stats for r in s["rejected_reward"]]
    left_out = Counter()
    for s in stats:
        left_out.update(s["left_out"])
    return {"prompts": prompts, "pairs": index["num_samples"], "rejects": index["rejects"],
            "reject_kinds": index["reject_kinds"], "candidates": cfg.candidates, "rewards": cfg.rewards,
            "candidates_left_out": {k: left_out.get(k, 0) for k in cfg.rewards},
            "mean_chosen_reward": float(np.mean(chosen)) if chosen else None,
            "mean_rejected_reward": float(np.mean(rejected)) if rejected else None,
            "shards": len(index["shards"]), "audio_spec": spec.describe()}
