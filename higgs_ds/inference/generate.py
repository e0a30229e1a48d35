"""Autoregressive audio generation with a KV cache, for a batch of prompts.

Each step feeds one audio-out position per prompt (the previous row of codes), reads the audio head at
that position, selects tokens (`sampling.py`) and forces the delay pattern with the family's stopping
rule (`ModelFamily.decoding_state`). The prompt's last position predicts the first row, so the first
forward (the prefill) yields the first sampled row.

Distributed (ZeRO-3): every rank must call the model's modules the same number of times. With
``sync_ranks=True`` (the default whenever torch.distributed is initialised with more than one rank)
the "all prompts finished" flag is all-reduced every step, so all ranks take the same number of
steps; finished prompts keep being fed all-EOS columns, whose outputs are discarded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from higgs_ds import comm
from higgs_ds.data.renderer import Renderer
from higgs_ds.data.schema import PromptConfig
from higgs_ds.inference.config import GenerationConfig
from higgs_ds.inference.prompt import TTSRequest, build_prompt, left_pad
from higgs_ds.inference.sampling import select_tokens
from higgs_ds.models import family_for_config


@dataclass
class GenerationResult:
    delayed: list[torch.Tensor]  # per prompt: the generated delayed segment [K, L] (BOS column first)
    codes: list[torch.Tensor]  # per prompt: codec codes [K, T] (delay reverted, clipped, BOS/EOS dropped)
    finished: list[bool]  # per prompt: the EOS diagonal completed before max_new_frames
    steps: int  # model forwards taken (the same on every rank when synced)
    stopped: bool = False  # `should_stop` said so before every prompt finished (a time limit)
    free: list[torch.Tensor] | None = None  # per prompt: bool [K, L], the cells of `delayed` the decoder sampled


def _distributed() -> bool:
    return comm.world_size() > 1


def _all_finished(local: bool, device, sync: bool) -> bool:
    if not sync:
        return local
    flag = torch.tensor([0.0 if local else 1.0], device=device)
    comm.all_reduce(flag, comm.ReduceOp.MAX)
    return flag.item() == 0


@torch.no_grad()
def generate_from_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_ids: torch.Tensor,
                      cfg: GenerationConfig, sync_ranks: bool | None = None,
                      should_stop: Callable[[], bool] | None = None, repeats: int = 1) -> GenerationResult:
    """Decode from left-padded prompts whose last position is the all-BOS `<|AUDIO_OUT|>` column.

    input_ids / attention_mask [B, S]; audio_ids [N_audio, K] (the model's expanded-input contract).
    `should_stop` is asked once per decoding step (after the step's column is kept): True ends decoding there,
    as `max_new_frames` would (a cooperative time limit). With synced ranks every rank must answer alike.
    `repeats` samples per prompt share its prefill: the prompts are encoded once, then the KV cache is
    expanded; the result holds B x repeats segments, prompt-major (GRPO's groups)."""
    model_cfg = model.config
    device = next(model.parameters()).device
    sync = _distributed() if sync_ranks is None else sync_ranks
    if not bool(torch.isin(input_ids[:, -1], torch.tensor(model_cfg.audio_head_token_ids)).all()):
        raise ValueError("every prompt must end with the position that predicts the first audio row (one of the "
                         "config's audio_head_token_ids); build prompts with higgs_ds.inference.build_prompt")
    b, k = input_ids.shape[0] * repeats, model_cfg.audio_num_codebooks
    input_ids, attention_mask, audio_ids = input_ids.to(device), attention_mask.to(device), audio_ids.to(device)
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    state = family_for_config(model_cfg).decoding_state(b, k, model_cfg.audio_stream_bos_id,
                                                        model_cfg.audio_stream_eos_id, device)
    step_ids = torch.full((b, 1), model_cfg.audio_out_token_idx, dtype=torch.long, device=device)
    ones = torch.ones((b, 1), dtype=attention_mask.dtype, device=device)

    stopped = False
    cache = DynamicCache()
    out = model(input_ids, audio_ids, attention_mask, past_key_values=cache)
    last = out.hidden_states[:, -1]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        attention_mask, last = attention_mask.repeat_interleave(repeats, 0), last.repeat_interleave(repeats, 0)
    steps = 1
    while True:
        logits = model.audio_logits(last).float()  # [B, K, C+2]
        tokens = select_tokens(logits, cfg, state.history(cfg.ras_window), generator)
        column = state.append(tokens)
        done = bool(state.finished.all()) or len(state.columns) - 1 >= cfg.max_new_frames
        if not done and should_stop is not None and should_stop():
            done = stopped = True
        if _all_finished(done, device, sync):
            break
        attention_mask = torch.cat([attention_mask, ones], dim=1)
        last = model(step_ids, column, attention_mask, past_key_values=cache).hidden_states[:, -1]
        steps += 1

    delayed = state.segments()
    finished = state.finished.tolist()
    codes = [state.segment_codes(d, f, model_cfg.audio_codebook_size).cpu()
             for d, f in zip(delayed, finished, strict=True)]
    return GenerationResult([d.cpu() for d in delayed], codes, finished, steps, stopped=stopped,
                            free=[f.cpu() for f in state.free_cells()])


def generate(model, renderer: Renderer, requests: list[TTSRequest], cfg: GenerationConfig | None = None,
             prompt: PromptConfig | None = None, sync_ranks: bool | None = None,
             should_stop: Callable[[], bool] | None = None) -> GenerationResult:
    """Generate codes for a batch of TTS requests (one prompt per request). Defaults: Higgs Audio v2's
    inference settings (`GenerationConfig()`) and the training prompt layout (`PromptConfig()`); `should_stop`:
    see `generate_from_ids`."""
    if not requests:
        raise ValueError("generate() needs at least one request")
    cfg = cfg or GenerationConfig()
    model_cfg = model.config
    prompts = [build_prompt(renderer, r, model_cfg.audio_stream_bos_id, model_cfg.audio_stream_eos_id, prompt)
               for r in requests]
    batch = left_pad(prompts, renderer.pad_id)
    return generate_from_ids(model, batch["input_ids"], batch["attention_mask"], batch["audio_ids"], cfg, sync_ranks,
                             should_stop)
