"""GRPO sampling speed: G samples per prompt with a shared prefill (the prompt encoded once, its KV cache
expanded) against a loop that prefills every sample, for Higgs Audio v2 at the same shape, and the split of a
GRPO step between sampling, reward scoring and the update. Prints rows (sampled delay-pattern columns) per
second and the ratio, measured in one run. Runs only with `pytest --benchmark`.

transformers' own `generate` is not compared: its Higgs Audio v2 port (HiggsAudioV2ForConditionalGeneration)
needs its processor's audio-token layout and generation config, which our prompts do not produce; the loop
here is the same KV-cache decoder without the shared prefill."""

from __future__ import annotations

import time

import pytest
import torch

from higgs_ds.inference import GenerationConfig, TTSRequest, build_prompt, generate_from_ids, left_pad
from higgs_ds.models import FreshModelShape, get_family
from higgs_ds.rewards import build_rewards, make_samples
from higgs_ds.train.preference.config import GrpoConfig
from higgs_ds.train.preference.grpo import group_advantages, grpo_loss
from higgs_ds.train.preference.logprobs import cell_logprobs, scoring_batch
from tests.data.synthetic import SPEC

pytestmark = pytest.mark.benchmark

SHAPE = FreshModelShape(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2)
PROMPTS, G, FRAMES = 2, 8, 48
TEXT = "هذه جملة طويلة نسبيا لقياس سرعة التوليد " * 4  # a long prompt: what the shared prefill saves


def test_shared_prefill_sampling_and_the_grpo_step_split(tokenizer):
    family = get_family("higgs_v2_dualffn")
    torch.manual_seed(0)
    model = family.build_model(family.fresh_config(SHAPE, tokenizer, SPEC)).eval()
    cfg, renderer = model.config, family.make_renderer(tokenizer, SPEC.num_codebooks)
    prompts = [build_prompt(renderer, TTSRequest(TEXT + str(i)), cfg.audio_stream_bos_id, cfg.audio_stream_eos_id)
               for i in range(PROMPTS)]
    gen = GenerationConfig(max_new_frames=FRAMES, top_k=None, top_p=None, ras_window=0, seed=0)
    # no stop: every sample decodes FRAMES rows, so both paths do the same work
    model.audio_logits = _never_eos(model.audio_logits, cfg.audio_stream_eos_id)

    def shared():
        batch = left_pad(prompts, renderer.pad_id)
        return generate_from_ids(model, batch["input_ids"], batch["attention_mask"], batch["audio_ids"], gen,
                                 sync_ranks=False, repeats=G)

    def every_sample():
        batch = left_pad([p for p in prompts for _ in range(G)], renderer.pad_id)
        return generate_from_ids(model, batch["input_ids"], batch["attention_mask"], batch["audio_ids"], gen,
                                 sync_ranks=False)

    rates = {}
    for name, fn in (("shared prefill", shared), ("prefill per sample", every_sample)):
        fn()  # warm-up
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        rows = sum(d.shape[1] - 1 for d in result.delayed)
        rates[name] = rows / seconds
        print(f"{name}: {rows} rows in {seconds:.2f} s = {rates[name]:.0f} rows/s "
              f"(prompt {len(prompts[0].input_ids)} positions, {PROMPTS} prompts x G={G}, {FRAMES} rows)")
    print(f"shared prefill / prefill per sample: {rates['shared prefill'] / rates['prefill per sample']:.2f}x")

    # one GRPO step's split (toy codes-only reward, one pass, no reference forward)
    rewards, grpo = build_rewards({"tests.train.toy_rewards:low_codes": 1.0}), GrpoConfig(group_size=G, kl_beta=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    result = shared()
    t1 = time.perf_counter()
    total = rewards.score(make_samples(result.codes, [TEXT] * len(result.codes), result.finished, spec=SPEC)).total
    t2 = time.perf_counter()
    group = [p for p in prompts for _ in range(G)]
    model.train()
    scored = scoring_batch([p.input_ids for p in group], [p.audio_ids for p in group], result.delayed, result.free,
                           cfg, renderer.pad_id)
    cells = cell_logprobs(model, scored)
    terms = grpo_loss(cells, cells.logp.detach(), None, group_advantages(torch.tensor(total, dtype=torch.float32), G),
                      grpo)
    opt.zero_grad()
    (terms.loss_sum / len(group)).backward()
    opt.step()
    t3 = time.perf_counter()
    step = t3 - t0
    print(f"GRPO step {step:.2f} s: sampling {100 * (t1 - t0) / step:.0f}%, rewards {100 * (t2 - t1) / step:.0f}%, "
          f"update {100 * (t3 - t2) / step:.0f}%")
    assert rates["shared prefill"] > 0 and step > 0


def _never_eos(audio_logits, eos: int):
    def logits(hidden):
        out = audio_logits(hidden)
        out[..., eos] = float("-inf")
        return out
    return logits
