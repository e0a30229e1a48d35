"""The optimizer step of `objective=dpo` and `objective=grpo`, and their metrics.

Built after the rendezvous (`build_objective`): the reference policy, and for GRPO the rewards (their models
load once per rank, before the first step). ZeRO-3: every rank runs the same forwards in the same order
(GRPO's sampling all-reduces its stop flag; the scoring forwards run on every rank); losses are sums
normalised by global counts, like the cross-entropy's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from higgs_ds import comm
from higgs_ds.inference.audio import write_wav
from higgs_ds.inference.config import GenerationConfig
from higgs_ds.inference.generate import generate_from_ids
from higgs_ds.report.run_files import GRPO_SAMPLES
from higgs_ds.rewards import (
    RewardResult,
    RewardSet,
    build_rewards,
    fit_chars_per_second,
    make_samples,
    save_chars_per_second,
)
from higgs_ds.rewards.candidates import scores_of
from higgs_ds.train.preference.dpo import dpo_loss
from higgs_ds.train.preference.grpo import group_advantages, grpo_loss
from higgs_ds.train.preference.logprobs import cell_logprobs, restrict_to_free, scoring_batch
from higgs_ds.train.preference.reference import ReferencePolicy, build_reference

log = logging.getLogger(__name__)
KEPT_SAMPLES = 5  # run_dir/grpo_samples/: the samples of the newest log lines (the report's players)


@dataclass
class Window:
    """Sums and counts of scalar metrics since the last log line, all-reduced when logged."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    time: float = 0.0

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def reduce(self, device) -> dict[str, float]:
        """Global means: every rank passes the same names in the same order (they log the same metrics)."""
        names = sorted(self.sums)
        t = torch.tensor([[self.sums[n], self.counts[n]] for n in names], dtype=torch.float64, device=device)
        t = comm.all_reduce(t.view(-1)).view(-1, 2) if names else t
        return {n: (float(s) / float(c) if c else 0.0) for n, (s, c) in zip(names, t.tolist(), strict=True)}


@dataclass
class FirstSample:
    """A GRPO step's first sample: heard in TensorBoard / W&B and kept in run_dir/grpo_samples/ at log lines."""

    codes: torch.Tensor  # [K, T] undelayed
    text: str
    reward: float
    scores: dict[str, float | None]  # reward -> value (None: left out for this sample)

    def save(self, run_dir: Path, step: int, wav: torch.Tensor | None, sample_rate: int | None) -> None:
        """stepNNNNNN.json (+ .wav when decoded), then drop all but the newest KEPT_SAMPLES steps (rank 0)."""
        folder = run_dir / GRPO_SAMPLES
        folder.mkdir(parents=True, exist_ok=True)
        if wav is not None:
            write_wav(folder / f"step{step:06d}.wav", wav, sample_rate)
        described = {"text": self.text, "frames": int(self.codes.shape[1]), "reward": self.reward,
                     "scores": self.scores}
        tmp = folder / f"step{step:06d}.json.tmp"
        tmp.write_text(json.dumps(described, ensure_ascii=False), encoding="utf-8")
        tmp.replace(folder / f"step{step:06d}.json")  # last: the report lists a sample by its description
        for old in sorted(folder.glob("step*.json"))[:-KEPT_SAMPLES]:
            old.with_suffix(".wav").unlink(missing_ok=True)
            old.unlink()


def generation_seed(seed: int, rank: int, step: int) -> int:
    """GRPO's sampling seed: a function of the run's seed, the rank and the step, so resume=auto resamples
    exactly what the interrupted run would have."""
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63)


class PreferenceObjective:
    def __init__(self, trainer, reference: ReferencePolicy, rewards: RewardSet | None = None,
                 reward_context: dict | None = None, codec=None) -> None:
        self.cfg, self.reference, self.rewards, self.codec = trainer.cfg, reference, rewards, codec
        self.context = reward_context or {}
        self.window = Window()
        self.last_sample: FirstSample | None = None

    # ---- DPO -------------------------------------------------------------------------------------

    def dpo_step(self, trainer, micro: list[dict], step: int) -> None:
        """One optimizer step over `grad_accum` pair batches (chosen rows first, then rejected)."""
        cfg, engine = self.cfg, trainer.engine
        pairs = comm.all_reduce(torch.tensor([float(sum(b["pairs"] for b in micro))], device=trainer.device))
        scale = cfg.grad_accum * trainer.world / pairs.clamp(min=1)
        for batch in micro:
            batch = restrict_to_free(batch, trainer.family, trainer.model_cfg)
            b = batch["pairs"]
            ref = self.reference.logprobs(batch).per_sample()
            cells = cell_logprobs(engine, batch)
            pol, n = cells.per_sample(), cells.counts()
            terms = dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], cfg.dpo, n[:b], n[b:])
            engine.backward(terms.loss.sum() * scale)
            engine.step()
            w = self.window
            w.add("loss", terms.loss.detach().sum(), b)
            w.add("dpo/chosen_logp", pol[:b].detach().sum(), b)
            w.add("dpo/rejected_logp", pol[b:].detach().sum(), b)
            w.add("dpo/reward_margin", (terms.chosen_reward - terms.rejected_reward).sum(), b)
            w.add("dpo/accuracy", (terms.chosen_reward > terms.rejected_reward).float().sum(), b)
            w.add("dpo/scored_cells", n.sum(), 2 * b)

    # ---- GRPO ------------------------------------------------------------------------------------

    def sample(self, trainer, batch: dict, step: int):
        """G samples per prompt from the current policy (inside the engine, shared prefill)."""
        g = self.cfg.grpo
        p = min(g.prompts, batch["input_ids"].shape[0])  # left-padded prompts: the first p rows
        gen = GenerationConfig(max_new_frames=g.max_new_frames, temperature=g.temperature, top_k=g.top_k,
                               top_p=g.top_p, ras_window=0, seed=generation_seed(self.cfg.seed, trainer.rank, step))
        trainer.engine.eval()
        result = generate_from_ids(trainer.engine.module, batch["input_ids"][:p], batch["attention_mask"][:p],
                                   _prompt_audio(batch, p), gen, sync_ranks=True, repeats=g.group_size)
        trainer.engine.train()
        return p, result

    def score(self, trainer, batch: dict, p: int, result) -> RewardResult:
        g = self.cfg.grpo.group_size
        texts = [t for t in batch["texts"][:p] for _ in range(g)]
        refs = [r for r in batch["ref_codes"][:p] for _ in range(g)]
        samples = make_samples(result.codes, texts, result.finished, spec=trainer.spec, codec=self.codec,
                               needs_audio=self.rewards.needs_audio, reference_codes=refs)
        scored = self.rewards.score(samples)
        w = self.window
        for name, values in scored.components.items():
            have = values[~np.isnan(values)]
            w.add(f"reward/{name}", have.sum(), len(have))
            w.add(f"reward/{name}_sq", (have ** 2).sum(), len(have))
            w.add(f"reward/{name}_left_out", scored.left_out[name], len(values))
        w.add("reward/total", scored.total.sum(), len(scored.total))
        w.add("reward/total_sq", (scored.total ** 2).sum(), len(scored.total))
        return scored

    def grpo_step(self, trainer, micro: list[dict], step: int) -> None:
        g, engine = self.cfg.grpo, trainer.engine
        batch = micro[0]
        t0 = time.perf_counter()
        p, result = self.sample(trainer, batch, step)
        t1 = time.perf_counter()
        scored_rewards = self.score(trainer, batch, p, result)
        total = scored_rewards.total
        t2 = time.perf_counter()
        prompts = [q for q in batch["prompts"][:p] for _ in range(g.group_size)]
        scored = scoring_batch([q.input_ids for q in prompts], [q.audio_ids for q in prompts], result.delayed,
                               result.free, trainer.model_cfg, int(batch["pad_id"]))
        scored = {k: v.to(trainer.device) for k, v in scored.items()}
        advantages = group_advantages(torch.tensor(total, dtype=torch.float32), g.group_size,
                                      g.scale_by_std).to(trainer.device)
        ref = self.reference.logprobs(scored, g.temperature).logp if g.kl_beta else None
        samples = comm.all_reduce(torch.tensor([float(len(prompts))], device=trainer.device))
        scale = trainer.world / samples.clamp(min=1)
        old = None
        for _ in range(g.epochs):
            cells = cell_logprobs(engine, scored, g.temperature)
            if old is None:
                old = cells.logp.detach()  # the sampler's log-probs: the ratio is 1 on the first pass
            terms = grpo_loss(cells, old, ref, advantages, g)
            engine.backward(terms.loss_sum * scale)
            engine.step()
            self.window.add("grpo/clip_fraction", terms.clip_fraction * terms.cells, terms.cells)
        t3 = time.perf_counter()
        self.last_sample = FirstSample(result.codes[0], batch["texts"][0], float(total[0]),
                                       scores_of(scored_rewards, 0))
        w, n = self.window, len(prompts)
        w.add("loss", terms.loss_sum.detach(), n)
        w.add("grpo/kl", terms.kl * terms.cells, terms.cells)
        w.add("grpo/frames", sum(c.shape[1] for c in result.codes), n)
        w.add("grpo/stopped", sum(result.finished), n)
        w.add("grpo/advantage_abs", advantages.abs().sum(), n)
        for name, seconds in (("sample", t1 - t0), ("reward", t2 - t1), ("update", t3 - t2)):
            w.add(f"time/{name}_s", seconds)

    def step(self, trainer, micro: list[dict], step: int) -> None:
        start = time.perf_counter()
        (self.dpo_step if self.cfg.objective == "dpo" else self.grpo_step)(trainer, micro, step)
        self.window.add("time/step_s", time.perf_counter() - start)

    def log(self, trainer, done: int) -> dict:
        logged = self.window.reduce(trainer.device)
        for key in [k for k in logged if k.endswith("_sq")]:  # mean of squares -> std
            mean = logged[key[:-3]]
            logged[key[:-3] + "_std"] = float(np.sqrt(max(logged.pop(key) - mean ** 2, 0.0)))
        logged.update({"lr": trainer.scheduler.get_last_lr()[0],
                       "grad_norm": float(trainer.engine.get_global_grad_norm() or 0.0)})
        trainer.writer.write(done, logged)
        sample = self.last_sample
        if sample is not None and trainer.rank == 0:
            wav = None
            if self.codec is not None and sample.codes.numel():  # decoded only where a reward needed audio
                wav = self.codec.decode(sample.codes.long()).float()
                trainer.writer.write_media(done, audio={"grpo/sample": (wav.numpy(), self.codec.sample_rate)})
            sample.save(trainer.run_dir, done, wav, self.codec.sample_rate if self.codec is not None else None)
        shown = {k: v for k, v in logged.items() if k in ("loss", "dpo/accuracy", "dpo/reward_margin", "reward/total",
                                                            "grpo/kl", "grpo/clip_fraction", "grpo/frames")}
        log.info("step %d/%d  %s", done, self.cfg.steps, "  ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        self.window = Window()
        return logged


def _prompt_audio(batch: dict, p: int) -> torch.Tensor:
    """The audio rows of the first p prompts (rows are prompt-major)."""
    rows = sum(int(q.audio_ids.shape[0]) for q in batch["prompts"][:p])
    return batch["audio_ids"][:rows]


def build_objective(trainer, ds_config: dict) -> PreferenceObjective:
    """After the rendezvous: the reference policy and (GRPO) the rewards with their models and context."""
    cfg = trainer.cfg
    reference = build_reference(cfg, trainer.family, trainer.model_cfg, ds_config, trainer.engine) \
        if cfg.objective == "dpo" or cfg.grpo.kl_beta else None
    if cfg.objective == "dpo":
        return PreferenceObjective(trainer, reference)
    context = {"device": str(trainer.device), "frame_rate": trainer.spec.frame_rate, **cfg.grpo.reward_models}
    if "duration" in cfg.rewards:
        context["chars_per_second"] = fit_chars_per_second([cfg.data.shards])
        if trainer.rank == 0:
            trainer.run_dir.mkdir(parents=True, exist_ok=True)
            save_chars_per_second(trainer.run_dir, context["chars_per_second"], [cfg.data.shards])
    rewards = build_rewards(cfg.rewards, context)
    codec = None
    if rewards.needs_audio:
        from higgs_ds.codec import load_codec_for_spec

        codec = load_codec_for_spec(trainer.spec, None, what="the training shards' codes")
    return PreferenceObjective(trainer, reference, rewards, context, codec)
