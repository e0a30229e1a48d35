"""The training loop. `train()` sets up, resumes, then runs a fixed budget of steps, each one
`train_step` (forward/backward/step, with the non-finite retry inside), then `log_window` and the
periodic `maybe_predict` / `maybe_eval` / `maybe_save`.

Setup pieces come from `build` (tokenizer, audio spec, model checked against the data, optimizer),
`parallelize` (ZeRO) and `distributed`; metric reductions, MFU and the sanity guards from `metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from higgs_ds import ops
from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.eval_batches import build_eval_batches
from higgs_ds.data.loader import StreamingLoader, build_loader
from higgs_ds.model.loss import LossWeights, combine, target_counts
from higgs_ds.train import checkpointing
from higgs_ds.train.audio_eval import AudioEvaluator, listening_summary
from higgs_ds.train.build import build_model, build_optimizer, data_audio_spec, load_tokenizer
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.distributed import init_distributed
from higgs_ds.train.ds_config import build_ds_config
from higgs_ds.train.metrics import (
    MetricsWriter,
    MetricWindow,
    accumulate,
    active_params_per_token,
    all_reduce,
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

log = logging.getLogger("higgs_ds")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Trainer:
    """What setup builds and every phase of a step reads."""

    cfg: TrainConfig
    rank: int
    world: int
    engine: deepspeed.DeepSpeedEngine
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokenizer: object
    spec: AudioSpec
    loader: StreamingLoader
    eval_batches: list[dict] | None
    stop_signal: dict
    weights: LossWeights
    n_active: int
    batches: Iterator[dict] | None = None
    writer: MetricsWriter | None = None
    audio_evals: list[AudioEvaluator] = dataclasses.field(default_factory=list)
    window: MetricWindow | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def mcfg(self):
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


def _catch_stop_signals() -> dict:
    """SIGTERM (preemption, scancel) and SIGUSR1 (Slurm's pre-timeout warning) ask for a checkpoint
    and a clean exit at the next step boundary."""
    received = {"signal": None}

    def handler(signum, _frame):
        received["signal"] = signal.Signals(signum).name

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, handler)
    return received


def _setup_logging(rank: int) -> None:
    tty = os.isatty(1)
    handler = RichHandler(show_path=False, markup=False) if tty else logging.StreamHandler()  # plain lines in files
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, force=True, handlers=[handler],
                        format="%(message)s" if tty else "%(asctime)s %(levelname)s %(message)s")


def setup(cfg: TrainConfig, ds_config_path: str) -> Trainer:
    rank, world = init_distributed(cfg.dist_timeout_s)
    stop_signal = _catch_stop_signals()
    _setup_logging(rank)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: the model initialises identically
    ops.set_backend(cfg.ops_backend)

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    ds_config = build_ds_config(ds_config_path, cfg, world)
    spec = data_audio_spec(cfg)  # what the codes mean: from shards.json, into every checkpoint
    model = build_model(cfg, tokenizer, ds_config, spec)
    model.gradient_checkpointing = cfg.activation_checkpointing
    optimizer, scheduler = build_optimizer(model, cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    log.info("model: %.2fM parameters, %d layers, world size %d, ZeRO stage %d, %s", parameter_count(model) / 1e6,
             model.config.text_config.num_hidden_layers, world, ds_config["zero_optimization"]["stage"],
             "bf16" if ds_config["bf16"]["enabled"] else "fp32")

    loader = build_loader(cfg.data, tokenizer, rank=rank, world_size=world)
    eval_batches = None
    if cfg.data.eval_shards and cfg.eval_every:
        eval_cfg = dataclasses.replace(cfg.data, shards=cfg.data.eval_shards)
        eval_batches = build_eval_batches(eval_cfg, tokenizer, rank=rank, world_size=world)
    weights = LossWeights(cfg.loss.text_weight, cfg.loss.audio_weight, cfg.loss.codebook_weights)
    return Trainer(cfg, rank, world, engine, scheduler, tokenizer, spec, loader, eval_batches, stop_signal, weights,
                   active_params_per_token(model))


def resume(t: Trainer) -> int:
    """Restore the engine, data position and RNG from `resume` (if any); returns the first step to run.
    Then record the run's config and open the metric sinks."""
    start_step = 0
    tag = checkpointing.resolve_resume(t.ckpt_dir, t.cfg.resume)
    if tag:
        state = checkpointing.load(t.engine, t.ckpt_dir, tag)
        t.loader.load_state_dict(state["loader"])
        start_step = state["step"]
        log.info("resumed from %s at step %d", t.ckpt_dir / tag, start_step)
    if t.rank == 0:
        t.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (t.run_dir / "config.json").write_text(json.dumps(t.cfg.to_dict(), indent=2))
    t.writer = MetricsWriter(t.run_dir, t.cfg.to_dict(), t.cfg.wandb_project, enabled=t.rank == 0)
    if t.cfg.audio_eval.every:
        t.audio_evals = AudioEvaluator.from_config(t.cfg.audio_eval, t.engine.module, t.tokenizer,
                                                   t.cfg.data.eval_shards, t.spec, prompt=t.cfg.data.stream.prompt,
                                                   train_shards=t.cfg.data.shards)
    t.batches = iter(t.loader)
    t.window = MetricWindow.empty(t.mcfg.audio_num_codebooks, t.device)
    return start_step


def train_step(t: Trainer, micro: list[dict], step: int) -> None:
    """One optimizer step over `grad_accum` micro-batches. The loss is normalised by the global number of
    valid targets of the step (all ranks, all micro-batches); DeepSpeed divides by GAS and averages over
    ranks, so each micro-batch's sum is scaled back up. A micro-batch with a non-finite loss on any rank is
    dropped on all of them and the next batch takes its place, so DeepSpeed's boundary never moves."""
    count = lambda b: target_counts(b, t.mcfg.audio_out_token_idx).to(t.device)  # noqa: E731
    counts = all_reduce(sum(count(b) for b in micro))
    for batch in micro:
        while True:
            out = _forward(t.engine, batch)
            parts = combine(out.loss_sums, t.weights, counts.clamp(min=1) / (t.cfg.grad_accum * t.world))
            if all_reduce(torch.isfinite(parts.loss.detach()).float().view(1), dist.ReduceOp.MIN).item():
                break
            t.nonfinite_in_a_row += 1
            t.nonfinite_total += 1
            log.warning("step %d: non-finite loss, micro-batch dropped on all ranks (%d in a row)", step,
                        t.nonfinite_in_a_row)
            if t.nonfinite_in_a_row >= t.cfg.max_nonfinite:
                raise NonFiniteLossError(f"{t.nonfinite_in_a_row} non-finite losses in a row at step {step}: "
                                         "lower the learning rate or check the data")
            replacement = t.next_batch()  # no backward, no engine.step for the dropped one
            counts += all_reduce(count(replacement) - count(batch))
            batch = replacement
        t.nonfinite_in_a_row = 0
        t.engine.backward(parts.loss)
        t.engine.step()
        t.window.add_batch(out.loss_sums, batch)


def log_window(t: Trainer, step: int, done: int) -> dict:
    """Reduce the window over all ranks, check it, write it, print the line; start a new window."""
    m = global_loss_metrics(t.window.sums, t.weights)
    m.update({"lr": t.scheduler.get_last_lr()[0], "grad_norm": float(t.engine.get_global_grad_norm() or 0.0),
              **t.window.rates(t.device), "peak_mem_gb": peak_memory_gb(), "nonfinite_skipped": t.nonfinite_total,
              **global_loader_metrics(t.loader, t.device)})
    if t.cfg.peak_tflops:
        m["mfu"] = mfu(t.n_active, m["tokens_per_s"], t.cfg.peak_tflops, t.world)
    sanity_checks(step, m, t.mcfg.vocab_size, t.mcfg.codebook_rows)
    t.writer.write(done, m)
    log.info("step %d/%d  loss %.4f  text %.4f  audio %.4f  acc/text %.3f  acc/cb0 %.3f  lr %.2e  "
             "grad %.2f  %.0f tok/s  wait %.0f%%", done, t.cfg.steps, m["loss"], m["loss/text"], m["loss/audio"],
             m["acc/text"], m["acc/audio_cb0"], m["lr"], m["grad_norm"], m["tokens_per_s"],
             100 * m["data_wait_frac"])
    t.window = MetricWindow.empty(t.mcfg.audio_num_codebooks, t.device)
    return m


def _due(every: int, done: int, end: int) -> bool:
    return bool(every) and (done % every == 0 or done == end)


def maybe_predict(t: Trainer, done: int, end: int, batch: dict) -> None:
    """The shifted prediction report of one micro-batch (every rank runs the heads; rank 0 writes)."""
    if not _due(t.cfg.predict_every, done, end):
        return
    t.engine.eval()
    with torch.no_grad():
        out = t.engine.module(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
        report = prediction_report(t.engine.module, out, batch, t.tokenizer)
    t.engine.train()
    if t.rank == 0:
        log.info(format_report(done, report))
        with (t.run_dir / "predictions.jsonl").open("a") as f:
            f.write(json.dumps({"step": done, **report}, ensure_ascii=False) + "\n")


def evaluate(t: Trainer) -> dict:
    """Loss over the whole held-out split (every rank runs the same number of forwards)."""
    t.engine.eval()
    acc = zero_sums(t.mcfg.audio_num_codebooks, t.device)
    with torch.no_grad():
        for batch in t.eval_batches:
            accumulate(acc, _forward(t.engine, _to(batch, t.device)).loss_sums)
    t.engine.train()
    return global_loss_metrics(acc, t.weights)


def maybe_eval(t: Trainer, done: int, end: int) -> None:
    if t.eval_batches is not None and _due(t.cfg.eval_every, done, end):
        em = evaluate(t)
        t.writer.write(done, em, kind="eval")
        log.info("eval @ %d  loss %.4f  text %.4f  audio %.4f", done, em["loss"], em["loss/text"], em["loss/audio"])
    for evaluator in t.audio_evals if _due(t.cfg.audio_eval.every, done, end) else ():
        am = evaluator.run(done, t.run_dir, t.writer)  # every rank: generation runs in ZeRO-3 lockstep
        p = f"{evaluator.name}/" if evaluator.name else ""
        log.info("audio eval%s @ %d  frame_acc %.3f  length_ratio %.2f  stop_rate %.2f  tf/acc_audio %.3f",
                 f" ({evaluator.name})" if p else "", done, am[p + "gen/frame_acc"], am[p + "gen/length_ratio"],
                 am[p + "gen/stop_rate"], am[p + "tf/acc_audio"])


def stop_requested(t: Trainer) -> bool:
    """All ranks agree on stopping, even if only one of them got the signal."""
    flag = torch.tensor([t.stop_signal["signal"] is not None], dtype=torch.float32, device=t.device)
    return all_reduce(flag, dist.ReduceOp.MAX).item() > 0


def maybe_save(t: Trainer, done: int, end: int, stopping: bool) -> str | None:
    if not (_due(t.cfg.save_every, done, end) or stopping):
        return None
    meta = {"train": t.cfg.to_dict(), "model": t.mcfg.to_boson_dict(), "audio_spec": t.spec.to_dict()}
    tag = checkpointing.save(t.engine, t.ckpt_dir, done, {"loader": t.loader.state_dict()}, meta, t.cfg.keep_last)
    log.info("saved checkpoint %s", t.ckpt_dir / tag)
    return tag


def _progress(t: Trainer, start: int) -> tuple[Progress, int]:
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), disable=t.rank != 0 or not os.isatty(1))
    task = progress.add_task("train", total=t.cfg.steps, completed=start, status="")
    progress.start()
    return progress, task


def train(cfg: TrainConfig, ds_config_path: str) -> Path:
    t = setup(cfg, ds_config_path)
    start = resume(t)
    end = min(cfg.steps, cfg.stop_at or cfg.steps)
    progress, task = _progress(t, start)
    for step in range(start, end):
        t0 = time.perf_counter()
        micro = [t.next_batch() for _ in range(cfg.grad_accum)]
        t.window.wait += time.perf_counter() - t0
        train_step(t, micro, step)
        t.window.time += time.perf_counter() - t0
        done = step + 1
        if step == start or done % cfg.log_every == 0 or done == end:
            progress.update(task, completed=done, status=f"loss {log_window(t, step, done)['loss']:.3f}")
        maybe_predict(t, done, end, micro[0])
        maybe_eval(t, done, end)
        stopping = stop_requested(t)
        tag = maybe_save(t, done, end, stopping)
        if stopping:
            log.warning("stop requested (%s) at step %d: checkpoint %s written; resume with resume=auto",
                        t.stop_signal["signal"] or "signal on another rank", done, t.ckpt_dir / tag)
            break
    progress.stop()
    if t.rank == 0:
        log.info("done: metrics in %s, loss curve %s", t.run_dir / "metrics.jsonl", plot_loss_curves(t.run_dir))
        summary = listening_summary(t.run_dir) if t.audio_evals else None
        if summary:
            log.info(summary)
    t.writer.close()
    dist.barrier()
    return t.run_dir
