"""The training loop. `train()` sets up, resumes, then runs a fixed budget of steps, each one
`train_step` (forward/backward/step, with the non-finite retry inside), then `log_window` and the
periodic `maybe_predict` / `maybe_eval` / `maybe_save`; at the end `summarize_run` (loss curve, listening
table, runs/<run>/report.html).

Setup pieces come from `build` (tokenizer, audio spec, model checked against the data, optimizer),
`parallelize` (ZeRO) and `distributed`; metric reductions, MFU and the sanity guards from `metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import numpy as np
import torch
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from higgs_ds import comm, ops
from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.eval_batches import build_eval_batches
from higgs_ds.data.loader import RankDataExhausted, StreamingLoader, build_loader
from higgs_ds.errors import DataError
from higgs_ds.models import ModelFamily, get_family
from higgs_ds.models.loss import LossWeights, combine, target_counts
from higgs_ds.report import write_report
from higgs_ds.train import checkpointing, stopping
from higgs_ds.train.audio_eval import AudioEvaluator, listening_summary
from higgs_ds.train.build import build_model, build_optimizer, data_audio_spec, load_tokenizer
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.distributed import init_distributed
from higgs_ds.train.ds_config import build_ds_config, zeropp_summary
from higgs_ds.train.metrics import (
    MetricsWriter,
    MetricWindow,
    accumulate,
    active_params_per_token,
    global_loader_metrics,
    global_loss_metrics,
    mfu,
    parameter_count,
    peak_memory_gb,
    plot_loss_curves,
    sanity_checks,
    zero_sums,
)
from higgs_ds.train.predictions import format_report, prediction_report
from higgs_ds.train.preference.data import pair_renderer, prompt_renderer
from higgs_ds.train.preference.objective import PreferenceObjective, build_objective

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class RankDataError(DataError):
    """A rank's data ran dry after the rendezvous: every rank learns it from one all-reduce, rank 0 says it."""

    every_rank = True


@dataclass
class Trainer:
    """What setup builds and every phase of a step reads."""

    cfg: TrainConfig
    rank: int
    world: int
    engine: deepspeed.DeepSpeedEngine
    scheduler: torch.optim.lr_scheduler.LRScheduler
    family: ModelFamily
    tokenizer: object
    spec: AudioSpec
    loader: StreamingLoader
    eval_batches: list[dict] | None
    weights: LossWeights
    n_active: int
    batches: Iterator[dict] | None = None
    writer: MetricsWriter | None = None
    audio_evals: list[AudioEvaluator] = dataclasses.field(default_factory=list)
    window: MetricWindow | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    kernels_written: dict = dataclasses.field(default_factory=dict)  # the last `ops.kernel_choices()` recorded
    objective: PreferenceObjective | None = None  # dpo / grpo; None: cross-entropy (sft)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def model_cfg(self):
        return self.engine.module.config

    @property
    def device(self):
        return self.engine.device

    def next_batch(self) -> dict:
        return _to(next(self.batches), self.device)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _forward(engine, batch):
    return engine(batch["input_ids"], batch["audio_ids"], batch["attention_mask"],
                  labels=batch["labels"], audio_labels=batch["audio_labels"])


def _setup_logging(rank: int) -> None:
    tty = os.isatty(1)
    handler = RichHandler(show_path=False, markup=False) if tty else logging.StreamHandler()  # plain lines in files
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, force=True, handlers=[handler],
                        format="%(message)s" if tty else "%(asctime)s %(levelname)s %(message)s")


def setup(cfg: TrainConfig, ds_config_path: str) -> Trainer:
    rank, world = init_distributed(cfg.dist_timeout_s)
    stopping.catch_stop_signals()
    _setup_logging(rank)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: the model initialises identically
    ops.set_backend(cfg.ops_backend)

    family = get_family(cfg.model.arch)
    tokenizer = load_tokenizer(cfg.data.tokenizer, family)
    ds_config = build_ds_config(ds_config_path, cfg, world)
    spec = data_audio_spec(cfg)  # what the codes mean: from shards.json, into every checkpoint
    model = build_model(cfg, family, tokenizer, ds_config, spec)
    model.gradient_checkpointing = cfg.activation_checkpointing
    optimizer, scheduler = build_optimizer(model, cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    log.info("model: %.2fM parameters, %d layers, world size %d, ZeRO stage %d%s, %s", parameter_count(model) / 1e6,
             model.config.text_config.num_hidden_layers, world, ds_config["zero_optimization"]["stage"],
             zeropp_summary(ds_config), "bf16" if ds_config["bf16"]["enabled"] else "fp32")

    loader = build_loader(cfg.data, tokenizer, _make_renderer(cfg, family, spec), rank=rank, world_size=world)
    eval_batches = None
    if cfg.data.eval_shards and cfg.eval_every and cfg.objective == "sft":
        eval_cfg = dataclasses.replace(cfg.data, shards=cfg.data.eval_shards)
        eval_batches = build_eval_batches(eval_cfg, tokenizer, family.make_renderer, rank=rank, world_size=world)
    weights = LossWeights(cfg.loss.text_weight, cfg.loss.audio_weight, cfg.loss.codebook_weights)
    trainer = Trainer(cfg, rank, world, engine, scheduler, family, tokenizer, spec, loader, eval_batches, weights,
                      active_params_per_token(model))
    if cfg.objective != "sft":  # after the rendezvous, before the first step: reference policy, reward models
        trainer.objective = build_objective(trainer, ds_config)
    return trainer


def _make_renderer(cfg: TrainConfig, family: ModelFamily, spec: AudioSpec):
    """What the loader renders: training samples (sft), chosen/rejected pairs (dpo) or prompts (grpo)."""
    if cfg.objective == "dpo":
        return pair_renderer(family.make_renderer)
    if cfg.objective == "grpo":
        return prompt_renderer(family.make_renderer, spec.stream_bos, spec.stream_eos)
    return family.make_renderer


def resume(trainer: Trainer) -> int:
    """Restore the engine, data position and RNG from `resume` (if any); returns the first step to run.
    Then record the run's config and open the metric sinks."""
    start_step = 0
    tag = checkpointing.resolve_resume(trainer.ckpt_dir, trainer.cfg.resume)
    if tag:
        state = checkpointing.load(trainer.engine, trainer.ckpt_dir, tag)
        trainer.loader.load_state_dict(state["loader"])
        start_step = state["step"]
        log.info("resumed from %s at step %d", trainer.ckpt_dir / tag, start_step)
    if trainer.rank == 0:
        trainer.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (trainer.run_dir / "config.json").write_text(json.dumps(trainer.cfg.to_dict(), indent=2))
    cfg = trainer.cfg
    trainer.writer = MetricsWriter(trainer.run_dir, cfg.to_dict(), cfg.wandb_project, enabled=trainer.rank == 0,
                                   loggers=cfg.loggers)
    if cfg.audio_eval.every:
        trainer.audio_evals = AudioEvaluator.from_config(cfg.audio_eval, trainer.engine.module, trainer.tokenizer,
                                                         cfg.data.eval_shards, trainer.spec,
                                                         prompt=cfg.data.stream.prompt, train_shards=cfg.data.shards)
    trainer.batches = iter(trainer.loader)
    trainer.window = MetricWindow.empty(trainer.model_cfg.audio_num_codebooks, trainer.device)
    return start_step


def train_step(trainer: Trainer, micro: list[dict], step: int) -> None:
    """One optimizer step over `grad_accum` micro-batches. The loss is normalised by the global number of
    valid targets of the step (all ranks, all micro-batches); DeepSpeed divides by GAS and averages over
    ranks, so each micro-batch's sum is scaled back up. A micro-batch with a non-finite loss on any rank is
    dropped on all of them and the next batch takes its place, so DeepSpeed's boundary never moves.
    That verdict is a host sync per micro-batch; whether every rank had data (`next_micro_batches`) and the
    stop request are the step's only others."""
    count = lambda b: target_counts(b, trainer.model_cfg.audio_head_token_ids).to(trainer.device)  # noqa: E731
    counts = comm.all_reduce(sum(count(b) for b in micro))
    for batch in micro:
        while True:
            out = _forward(trainer.engine, batch)
            parts = combine(out.loss_sums, trainer.weights,
                            counts.clamp(min=1) / (trainer.cfg.grad_accum * trainer.world))
            if _finite_everywhere(trainer, torch.isfinite(parts.loss.detach())):
                break
            trainer.nonfinite_in_a_row += 1
            trainer.nonfinite_total += 1
            log.warning("step %d: non-finite loss, micro-batch dropped on all ranks (%d in a row)", step,
                        trainer.nonfinite_in_a_row)
            if trainer.nonfinite_in_a_row >= trainer.cfg.max_nonfinite:
                raise NonFiniteLossError(f"{trainer.nonfinite_in_a_row} non-finite losses in a row at step {step}: "
                                         "lower the learning rate or check the data")
            replacement = trainer.next_batch()  # no backward, no engine.step for the dropped one
            counts += comm.all_reduce(count(replacement) - count(batch))
            batch = replacement
        trainer.nonfinite_in_a_row = 0
        trainer.engine.backward(parts.loss)
        trainer.engine.step()
        trainer.window.add_batch(out.loss_sums, batch)


_DRY, _STOPPED = 1.0, 2.0  # why a rank has no batch for this step


def next_micro_batches(trainer: Trainer) -> list[dict] | None:
    """The step's micro-batches, or None when the run stops here. One small all-reduce per step makes every
    rank agree, whatever reached only some of them:
    - a stop signal (or the launcher gone) on any rank: None on all; a signal that comes while the batches
      are read has ended the loader's workers too (Slurm signals every process of the step), so the batches
      read on the other ranks are given back (the loader rewound) and the resume stays exact;
    - a rank whose shards hold no usable sample any more (every one skipped as corrupt, bad or too long):
      all stop with rank 0's line naming it, rather than with a lost connection on the ranks waiting for it."""
    before = trainer.loader.state_dict()
    micro, why = [], _STOPPED
    if stopping.reason() is None:
        try:
            micro, why = [trainer.next_batch() for _ in range(trainer.cfg.grad_accum)], 0.0
        except RankDataExhausted:
            micro, why = [], _DRY
        except Exception:  # a worker gone with the signal: the batch in flight cannot be read
            if stopping.reason() is None:
                raise
    flags = torch.zeros(trainer.world, device=trainer.device)
    flags[trainer.rank] = why
    flags = comm.all_reduce(flags)
    dry_ranks = (flags == _DRY).nonzero().flatten().tolist()
    if dry_ranks:
        raise RankDataError(f"no usable sample left for rank{'s' if len(dry_ranks) > 1 else ''} "
                            f"{', '.join(map(str, dry_ranks))}: every sample of its shards was skipped as corrupt, "
                            "bad or too long (see the skip warnings above)",
                            where=f"data.shards={trainer.cfg.data.shards}",
                            fix="rebuild the damaged shards, or raise data.stream.max_seq_len")
    if flags.any():
        trainer.loader.load_state_dict(before)
        return None
    return micro


def log_window(trainer: Trainer, step: int, done: int) -> dict:
    """Reduce the window over all ranks, check it, write it, print the line; start a new window."""
    logged = global_loss_metrics(trainer.window.sums, trainer.weights)
    logged.update({"lr": trainer.scheduler.get_last_lr()[0],
                   "grad_norm": float(trainer.engine.get_global_grad_norm() or 0.0),
                   **trainer.window.rates(trainer.device), "peak_mem_gb": peak_memory_gb(),
                   "nonfinite_skipped": trainer.nonfinite_total,
                   **global_loader_metrics(trainer.loader, trainer.device)})
    if trainer.cfg.peak_tflops:
        logged["mfu"] = mfu(trainer.n_active, logged["tokens_per_s"], trainer.cfg.peak_tflops, trainer.world)
    sanity_checks(step, logged, trainer.model_cfg.vocab_size, trainer.model_cfg.codebook_rows)
    trainer.writer.write(done, logged)
    if (kernels := ops.kernel_choices()) != trainer.kernels_written:  # first log line, and after a first-use fallback
        trainer.writer.write_kernels(done, kernels)
        trainer.kernels_written = kernels
    log.info("step %d/%d  loss %.4f  text %.4f  audio %.4f  acc/text %.3f  acc/cb0 %.3f  lr %.2e  "
             "grad %.2f  %.0f tok/s  wait %.0f%%", done, trainer.cfg.steps, logged["loss"], logged["loss/text"],
             logged["loss/audio"], logged["acc/text"], logged["acc/audio_cb0"], logged["lr"], logged["grad_norm"],
             logged["tokens_per_s"], 100 * logged["data_wait_frac"])
    trainer.window = MetricWindow.empty(trainer.model_cfg.audio_num_codebooks, trainer.device)
    return logged


def _due(every: int, done: int, end: int) -> bool:
    return bool(every) and (done % every == 0 or done == end)


def maybe_predict(trainer: Trainer, done: int, end: int, batch: dict) -> None:
    """The shifted prediction report of one micro-batch (every rank runs the heads; rank 0 writes)."""
    if not _due(trainer.cfg.predict_every, done, end) or trainer.objective is not None:
        return
    trainer.engine.eval()
    with torch.no_grad():
        out = trainer.engine.module(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
        report = prediction_report(trainer.engine.module, out, batch, trainer.tokenizer)
    trainer.engine.train()
    if trainer.rank == 0:
        log.info(format_report(done, report))
        with (trainer.run_dir / "predictions.jsonl").open("a") as f:
            f.write(json.dumps({"step": done, **report}, ensure_ascii=False) + "\n")
        trainer.writer.write_predictions(done, report)


def evaluate(trainer: Trainer) -> dict:
    """Loss over the whole held-out split (every rank runs the same number of forwards)."""
    trainer.engine.eval()
    acc = zero_sums(trainer.model_cfg.audio_num_codebooks, trainer.device)
    with torch.no_grad():
        for batch in trainer.eval_batches:
            accumulate(acc, _forward(trainer.engine, _to(batch, trainer.device)).loss_sums)
    trainer.engine.train()
    return global_loss_metrics(acc, trainer.weights)


def maybe_eval(trainer: Trainer, done: int, end: int) -> None:
    if trainer.eval_batches is not None and _due(trainer.cfg.eval_every, done, end):
        em = evaluate(trainer)
        trainer.writer.write(done, em, kind="eval")
        log.info("eval @ %d  loss %.4f  text %.4f  audio %.4f", done, em["loss"], em["loss/text"], em["loss/audio"])
    for evaluator in trainer.audio_evals if _due(trainer.cfg.audio_eval.every, done, end) else ():
        am = evaluator.run(done, trainer.run_dir, trainer.writer)  # every rank: generation runs in ZeRO-3 lockstep
        p = f"{evaluator.name}/" if evaluator.name else ""
        log.info("audio eval%s @ %d  frame_acc %.3f  length_ratio %.2f  stop_rate %.2f  tf/acc_audio %.3f",
                 f" ({evaluator.name})" if p else "", done, am[p + "gen/frame_acc"], am[p + "gen/length_ratio"],
                 am[p + "gen/stop_rate"], am[p + "tf/acc_audio"])


def _finite_everywhere(trainer: Trainer, finite: torch.Tensor) -> bool:
    """The loss is finite on every rank: one MIN all-reduce, one host sync per micro-batch."""
    return comm.all_reduce(finite.float().to(trainer.device).view(1), comm.ReduceOp.MIN).item() > 0


def maybe_save(trainer: Trainer, done: int, end: int, force: bool = False) -> str | None:
    """Save when due, or when `force`d (the run stops here)."""
    if not (_due(trainer.cfg.save_every, done, end) or force):
        return None
    meta = {"train": trainer.cfg.to_dict(), "family": trainer.family.name,
            "model": trainer.family.config_to_dict(trainer.model_cfg), "audio_spec": trainer.spec.to_dict()}
    tag = checkpointing.save(trainer.engine, trainer.ckpt_dir, done, {"loader": trainer.loader.state_dict()}, meta,
                             trainer.cfg.keep_last)
    log.info("saved checkpoint %s", trainer.ckpt_dir / tag)
    return tag


def announce_stop(trainer: Trainer, done: int, tag: str | None) -> None:
    if trainer.rank == 0:  # one line for the run
        where = f"checkpoint {trainer.ckpt_dir / tag} written" if tag else "no step trained since the last checkpoint"
        log.warning("stop requested (%s) at step %d: %s; resume with resume=auto",
                    stopping.reason() or "on another rank", done, where)


def summarize_run(trainer: Trainer, done: int) -> None:
    """Rank 0, at the end: the loss curve (a PNG, also to the metric sinks), the listening table and the
    run report (runs/<run>/report.html)."""
    curve = plot_loss_curves(trainer.run_dir)
    log.info("done: metrics in %s, loss curve %s", trainer.run_dir / "metrics.jsonl", curve)
    if curve:
        trainer.writer.write_media(done, images={"loss_curve": curve})
    summary = listening_summary(trainer.run_dir) if trainer.audio_evals else None
    if summary:
        log.info(summary)
    try:
        log.info("run report: %s", write_report(trainer.run_dir))
    except Exception:  # the run is trained and saved; a failed report must not leave the other ranks waiting
        log.exception("the run report failed; write it again with: python launch/report.py %s", trainer.run_dir)


def _progress(trainer: Trainer, start: int) -> tuple[Progress, int]:
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), disable=trainer.rank != 0 or not os.isatty(1))
    task = progress.add_task("train", total=trainer.cfg.steps, completed=start, status="")
    progress.start()
    return progress, task


def train(cfg: TrainConfig, ds_config_path: str) -> Path:
    trainer = setup(cfg, ds_config_path)
    start = resume(trainer)
    end = min(cfg.steps, cfg.stop_at or cfg.steps)
    progress, task = _progress(trainer, start)
    done = start
    saved = None  # the checkpoint written at `done`, if any
    for step in range(start, end):
        t0 = time.perf_counter()
        micro = next_micro_batches(trainer)
        if micro is None:  # a stop asked on some rank: all save the last finished step together
            if saved is None and done > start:
                saved = maybe_save(trainer, done, end, force=True)
            announce_stop(trainer, done, saved)
            break
        trainer.window.wait += time.perf_counter() - t0
        if trainer.objective is None:
            train_step(trainer, micro, step)
        else:
            trainer.objective.step(trainer, micro, step)
        trainer.window.time += time.perf_counter() - t0
        done = step + 1
        if step == start or done % cfg.log_every == 0 or done == end:
            logged = log_window(trainer, step, done) if trainer.objective is None else \
                trainer.objective.log(trainer, done)
            if trainer.objective is not None:
                trainer.window = MetricWindow.empty(trainer.model_cfg.audio_num_codebooks, trainer.device)
            progress.update(task, completed=done, status=f"loss {logged['loss']:.3f}")
        maybe_predict(trainer, done, end, micro[0])
        maybe_eval(trainer, done, end)
        saved = maybe_save(trainer, done, end)
    progress.stop()
    if trainer.rank == 0:
        summarize_run(trainer, done)
    trainer.writer.close()
    comm.barrier()
    return trainer.run_dir
