"""The training loop, top to bottom: setup, resume, then fixed-budget steps of
fetch → normalise → forward/backward → step → metrics / predictions / eval / checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from higgs_ds import ops
from higgs_ds.data.loader import build_eval_batches, build_loader
from higgs_ds.model.loss import LossSums, LossWeights, combine, target_counts
from higgs_ds.train import checkpointing
from higgs_ds.train.audio_eval import AudioEvaluator
from higgs_ds.train.build import build_model, build_optimizer, load_tokenizer
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.distributed import build_ds_config, init_distributed
from higgs_ds.train.metrics import MetricsWriter, peak_memory_gb, plot_loss_curves
from higgs_ds.train.predictions import format_report, prediction_report

log = logging.getLogger("higgs_ds")


class NonFiniteLossError(RuntimeError):
    pass


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _forward(engine, batch):
    return engine(batch["input_ids"], batch["audio_ids"], batch["attention_mask"],
                  labels=batch["labels"], audio_labels=batch["audio_labels"])


def _all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    dist.all_reduce(t, op=op)
    return t


def _sum_metrics(sums: LossSums, weights: LossWeights, k: int) -> dict:
    """Global (all-rank) mean losses and accuracies from accumulated sums."""
    flat = torch.cat([sums.text_sum.view(1), sums.text_count.view(1), sums.text_correct.view(1),
                      sums.audio_sum, sums.audio_count, sums.audio_correct]).detach().float()
    flat = _all_reduce(flat)
    t_sum, t_cnt, t_cor = flat[0], flat[1], flat[2]
    a_sum, a_cnt, a_cor = flat[3:3 + k], flat[3 + k:3 + 2 * k], flat[3 + 2 * k:]
    parts = combine(LossSums(t_sum, t_cnt, t_cor, a_sum, a_cnt, a_cor), weights)
    m = {"loss": parts.loss.item(), "loss/text": parts.text.item(), "loss/audio": parts.audio.item(),
         "acc/text": (t_cor / t_cnt.clamp(min=1)).item()}
    for i in range(k):
        m[f"loss/audio_cb{i}"] = parts.audio_per_codebook[i].item()
        m[f"acc/audio_cb{i}"] = (a_cor[i] / a_cnt[i].clamp(min=1)).item()
    return m


def _zero_sums(k: int, device) -> LossSums:
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    return LossSums(z(()), z(()), z(()), z(k), z(k), z(k))


def _new_window(k: int, device) -> dict:
    """What the loop sums between two metric lines."""
    return {"time": 0.0, "wait": 0.0, "tokens": 0, "samples": 0, "sums": _zero_sums(k, device)}


def _accumulate(acc: LossSums, s: LossSums) -> None:
    for name in ("text_sum", "text_count", "text_correct", "audio_sum", "audio_count", "audio_correct"):
        getattr(acc, name).add_(getattr(s, name).detach())


def _numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 partitions report their full size here


def active_params_per_token(model) -> int:
    """Parameters one token's forward passes through: attention, norms and ONE of the two MLPs per
    layer (DualFFN routes each token to exactly one). Embedding lookups and the heads (applied to
    labelled rows only) are left out, as is attention's sequence-length term: MFU = 6·N·tokens/s."""
    total = 0
    for layer in model.layers:
        total += sum(_numel(p) for p in layer.self_attn.parameters()) + sum(_numel(p) for p in layer.mlp.parameters())
        total += sum(_numel(p) for p in layer.input_layernorm.parameters()) * 2
    return total


def _global_loader_metrics(loader, device) -> dict:
    """The data counters of all ranks: skip counts summed, fractions averaged."""
    local = loader.metrics()
    keys = sorted(local)
    values = _all_reduce(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64, device=device))
    world = dist.get_world_size()
    averaged = {"padding_fraction", "last_padding_fraction", "epoch", "batches"}
    return {f"data/{k}": v / world if k in averaged else v for k, v in zip(keys, values.tolist(), strict=True)}


def _sanity_checks(step: int, m: dict, vocab: int, codebook_rows: int, real_data_steps: int = 300) -> None:
    """Warn on the signatures of label-alignment bugs (see the seed analysis)."""
    if step == 0:
        for key, bound in (("loss/text", math.log(vocab)), ("loss/audio", math.log(codebook_rows))):
            if m[key] > bound + 1.0:
                log.warning("step 0 %s=%.2f is far above the uniform bound ln(%d)=%.2f: a freshly initialised "
                            "head cannot be this confidently wrong; check the label alignment (shift).",
                            key, m[key], vocab if "text" in key else codebook_rows, bound)
    accs = [v for k, v in m.items() if k.startswith("acc/audio_cb")]
    if step < real_data_steps and accs and min(accs) > 0.98:
        log.warning("audio accuracy %.3f on every codebook after only %d steps: on real speech this means the "
                    "model sees its targets (copying its input), not that it learned audio.", min(accs), step)


def _catch_stop_signals() -> dict:
    """SIGTERM (preemption, scancel) and SIGUSR1 (Slurm's pre-timeout warning) ask for a checkpoint
    and a clean exit at the next step boundary."""
    received = {"signal": None}

    def handler(signum, _frame):
        received["signal"] = signal.Signals(signum).name

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, handler)
    return received


def evaluate(engine, batches: list[dict], weights: LossWeights, k: int) -> dict:
    """Loss over the whole held-out split (every rank runs the same number of forwards)."""
    engine.eval()
    acc = _zero_sums(k, engine.device)
    with torch.no_grad():
        for batch in batches:
            _accumulate(acc, _forward(engine, _to(batch, engine.device)).loss_sums)
    engine.train()
    return _sum_metrics(acc, weights, k)


def train(cfg: TrainConfig, ds_config_path: str) -> Path:
    # ---- setup --------------------------------------------------------------------------------
    rank, world = init_distributed(cfg.dist_timeout_s)
    stop_signal = _catch_stop_signals()
    handler = (RichHandler(show_path=False, markup=False) if os.isatty(1)
               else logging.StreamHandler())  # plain lines in log files, no 80-column wrapping
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, force=True, handlers=[handler],
                        format="%(message)s" if os.isatty(1) else "%(asctime)s %(levelname)s %(message)s")
    run_dir, ckpt_dir = Path(cfg.run_dir), Path(cfg.run_dir) / "checkpoints"
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank: the model initialises identically
    ops.set_backend(cfg.ops_backend)

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    ds_config = build_ds_config(ds_config_path, cfg, world)
    model = build_model(cfg, tokenizer, ds_config)
    mcfg = model.config
    k = mcfg.audio_num_codebooks
    model.gradient_checkpointing = cfg.activation_checkpointing
    optimizer, scheduler = build_optimizer(model, cfg)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    weights = LossWeights(cfg.loss.text_weight, cfg.loss.audio_weight, cfg.loss.codebook_weights)
    n_params = sum(_numel(p) for p in model.parameters())
    n_active = active_params_per_token(model)
    log.info("model: %.2fM parameters, %d layers, world size %d, ZeRO stage %d, %s", n_params / 1e6,
             mcfg.text_config.num_hidden_layers, world, ds_config["zero_optimization"]["stage"],
             "bf16" if ds_config["bf16"]["enabled"] else "fp32")

    loader = build_loader(cfg.data.train, tokenizer, rank=rank, world_size=world)
    eval_batches = None
    if cfg.data.eval_shards and cfg.eval_every:
        eval_cfg = dataclasses.replace(cfg.data.train, shards=cfg.data.eval_shards)
        eval_batches = build_eval_batches(eval_cfg, tokenizer, rank=rank, world_size=world)

    start_step = 0
    tag = checkpointing.resolve_resume(ckpt_dir, cfg.resume)
    if tag:
        state = checkpointing.load(engine, ckpt_dir, tag)
        loader.load_state_dict(state["loader"])
        start_step = state["step"]
        log.info("resumed from %s at step %d", ckpt_dir / tag, start_step)
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    writer = MetricsWriter(run_dir, cfg.to_dict(), cfg.wandb_project, enabled=rank == 0)
    audio_eval = None
    if cfg.audio_eval.every:
        audio_eval = AudioEvaluator.from_config(cfg.audio_eval, engine.module, tokenizer, cfg.data.eval_shards,
                                                prompt=cfg.data.train.stream.prompt)
    batches = iter(loader)
    nonfinite_in_a_row = nonfinite_total = 0
    window = _new_window(k, engine.device)
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), disable=rank != 0 or not os.isatty(1))
    task = progress.add_task("train", total=cfg.steps, completed=start_step, status="")
    progress.start()

    # ---- steps --------------------------------------------------------------------------------
    end_step = min(cfg.steps, cfg.stop_at or cfg.steps)
    for step in range(start_step, end_step):
        t0 = time.perf_counter()
        micro = [_to(next(batches), engine.device) for _ in range(cfg.grad_accum)]
        window["wait"] += time.perf_counter() - t0
        # Normalise by the global number of valid targets of this step (all ranks, all micro-batches);
        # DeepSpeed divides by GAS and averages over ranks, so each micro-batch's sum is scaled back up.
        count = lambda b: target_counts(b, mcfg.audio_out_token_idx).to(engine.device)  # noqa: E731
        counts = _all_reduce(sum(count(b) for b in micro))
        for batch in micro:
            while True:
                out = _forward(engine, batch)
                parts = combine(out.loss_sums, weights, counts.clamp(min=1) / (cfg.grad_accum * world))
                if _all_reduce(torch.isfinite(parts.loss.detach()).float().view(1), dist.ReduceOp.MIN).item():
                    break
                nonfinite_in_a_row += 1
                nonfinite_total += 1
                log.warning("step %d: non-finite loss, micro-batch dropped on all ranks (%d in a row)", step,
                            nonfinite_in_a_row)
                if nonfinite_in_a_row >= cfg.max_nonfinite:
                    raise NonFiniteLossError(f"{nonfinite_in_a_row} non-finite losses in a row at step {step}: "
                                             "lower the learning rate or check the data")
                # The next batch takes its place (no backward, no engine.step for the dropped one), so
                # DeepSpeed's accumulation boundary does not move; the step's counts follow the swap.
                replacement = _to(next(batches), engine.device)
                counts += _all_reduce(count(replacement) - count(batch))
                batch = replacement
            nonfinite_in_a_row = 0
            engine.backward(parts.loss)
            engine.step()
            _accumulate(window["sums"], out.loss_sums)
            window["tokens"] += int(batch["attention_mask"].sum())
            window["samples"] += batch["input_ids"].shape[0]
        window["time"] += time.perf_counter() - t0
        done = step + 1

        if step == start_step or done % cfg.log_every == 0 or done == end_step:
            m = _sum_metrics(window["sums"], weights, k)
            rates = _all_reduce(torch.tensor([window["tokens"], window["samples"]], dtype=torch.float64,
                                              device=engine.device))
            elapsed = max(window["time"], 1e-9)
            m.update({"lr": scheduler.get_last_lr()[0], "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                      "tokens_per_s": rates[0].item() / elapsed, "samples_per_s": rates[1].item() / elapsed,
                      "data_wait_frac": window["wait"] / elapsed, "peak_mem_gb": peak_memory_gb(),
                      "nonfinite_skipped": nonfinite_total, **_global_loader_metrics(loader, engine.device)})
            if cfg.peak_tflops:
                m["mfu"] = 6 * n_active * m["tokens_per_s"] / (cfg.peak_tflops * 1e12 * world)
            _sanity_checks(step, m, mcfg.vocab_size, mcfg.codebook_rows)
            writer.write(done, m)
            progress.update(task, completed=done, status=f"loss {m['loss']:.3f}")
            log.info("step %d/%d  loss %.4f  text %.4f  audio %.4f  acc/text %.3f  acc/cb0 %.3f  lr %.2e  "
                     "grad %.2f  %.0f tok/s  wait %.0f%%", done, cfg.steps, m["loss"], m["loss/text"],
                     m["loss/audio"], m["acc/text"], m["acc/audio_cb0"], m["lr"], m["grad_norm"],
                     m["tokens_per_s"], 100 * m["data_wait_frac"])
            window = _new_window(k, engine.device)

        if cfg.predict_every and (done % cfg.predict_every == 0 or done == end_step):
            engine.eval()
            with torch.no_grad():
                batch = micro[0]
                report = prediction_report(engine.module, engine.module(batch["input_ids"], batch["audio_ids"],
                                                                        batch["attention_mask"]), batch, tokenizer)
            engine.train()
            if rank == 0:
                log.info(format_report(done, report))
                with (run_dir / "predictions.jsonl").open("a") as f:
                    f.write(json.dumps({"step": done, **report}, ensure_ascii=False) + "\n")

        if eval_batches is not None and (done % cfg.eval_every == 0 or done == end_step):
            em = evaluate(engine, eval_batches, weights, k)
            writer.write(done, em, kind="eval")
            log.info("eval @ %d  loss %.4f  text %.4f  audio %.4f", done, em["loss"], em["loss/text"],
                     em["loss/audio"])

        if audio_eval is not None and (done % cfg.audio_eval.every == 0 or done == end_step):
            am = audio_eval.run(done, run_dir, writer)  # every rank: generation runs in ZeRO-3 lockstep
            log.info("audio eval @ %d  frame_acc %.3f  length_ratio %.2f  stop_rate %.2f  tf/acc_audio %.3f", done,
                     am["gen/frame_acc"], am["gen/length_ratio"], am["gen/stop_rate"], am["tf/acc_audio"])

        # all ranks agree on stopping, even if only one of them got the signal
        stopping = _all_reduce(torch.tensor([stop_signal["signal"] is not None], dtype=torch.float32,
                                            device=engine.device), dist.ReduceOp.MAX).item() > 0
        if done % cfg.save_every == 0 or done == end_step or stopping:
            tag = checkpointing.save(engine, ckpt_dir, done, {"loader": loader.state_dict()},
                                     {"train": cfg.to_dict(), "model": mcfg.to_boson_dict()}, cfg.keep_last)
            log.info("saved checkpoint %s", ckpt_dir / tag)
        if stopping:
            log.warning("stop requested (%s) at step %d: checkpoint %s written; resume with resume=auto",
                        stop_signal["signal"] or "signal on another rank", done, ckpt_dir / tag)
            break

    progress.stop()
    if rank == 0:
        png = plot_loss_curves(run_dir)
        log.info("done: metrics in %s, loss curve %s", run_dir / "metrics.jsonl", png)
    writer.close()
    dist.barrier()
    return run_dir
