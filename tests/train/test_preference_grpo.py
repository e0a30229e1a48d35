"""GRPO's arithmetic against hand-written values, and GRPO raising a plugged toy reward on a tiny model of
every family, in-process and seeded (sampling with a shared prefill, free-cell log-probs, clipped loss)."""

from __future__ import annotations

import math

import pytest
import torch

from higgs_ds.inference import GenerationConfig, TTSRequest, build_prompt, generate_from_ids, left_pad
from higgs_ds.models import FreshModelShape
from higgs_ds.rewards import build_rewards, make_samples
from higgs_ds.train.preference.config import GrpoConfig
from higgs_ds.train.preference.grpo import STD_EPS, group_advantages, grpo_loss, k3_kl
from higgs_ds.train.preference.logprobs import CellLogprobs, cell_logprobs, scoring_batch
from tests.data.synthetic import SPEC
from tests.families.kits import KITS, tiny_model

TOY = "tests.train.toy_rewards:low_codes"
STEPS = 20  # the first 10 against the last 10


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.2])
    got = group_advantages(r, 3)
    std = math.sqrt(((1 - 0.5) ** 2 + 0.5 ** 2 + 0) / 2)  # sample std of (1, 0, 0.5)
    want = [0.5 / (std + STD_EPS), -0.5 / (std + STD_EPS), 0.0]
    assert got[:3].tolist() == pytest.approx(want, rel=1e-6)
    # second group (0.5, 0.2, 0.2): mean 0.3, sample std sqrt(0.06/2)
    std2 = math.sqrt((0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2) / 2)
    assert got[3:].tolist() == pytest.approx([x / (std2 + STD_EPS) for x in (0.2, -0.1, -0.1)], rel=1e-5)
    assert group_advantages(r, 3, scale_by_std=False)[:3].tolist() == pytest.approx([0.5, -0.5, 0.0])
    assert group_advantages(torch.full((4,), 0.7), 4).abs().max() == 0  # equal rewards: no signal, no 0/0


def test_k3_kl_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.0, -1.0, -2.0])
    want = [math.exp(b - a) - (b - a) - 1 for a, b in zip(logp.tolist(), ref.tolist(), strict=True)]
    assert k3_kl(logp, ref).tolist() == pytest.approx(want)
    assert k3_kl(logp, logp).abs().max() == 0  # policy = reference


def test_the_clipped_loss_by_hand():
    """Two samples, two cells each; one advantage positive, one negative; a ratio outside the clip range."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
    old = torch.tensor([[-1.5, -2.0], [-0.5, -1.0]])  # ratios e^0.5, 1, 1, e^-0.5
    cells = CellLogprobs(logp, torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, 1]), 2)
    adv = torch.tensor([1.0, -2.0])
    cfg = GrpoConfig(clip_eps=0.2, kl_beta=0.0)
    terms = grpo_loss(cells, old, None, adv, cfg)
    rho = [[math.exp(0.5), 1.0], [1.0, math.exp(-0.5)]]
    clip = lambda x: min(max(x, 0.8), 1.2)  # noqa: E731
    per_cell = [[-min(r * a, clip(r) * a) for r in row] for row, a in zip(rho, adv.tolist(), strict=True)]
    want = sum(sum(row) / 2 for row in per_cell)  # mean over each sample's cells, summed over samples
    assert terms.loss_sum.item() == pytest.approx(want, rel=1e-6)
    assert terms.clip_fraction.item() == pytest.approx(2 / 4)  # e^0.5 with A>0 and e^-0.5 with A<0 clipped
    with_kl = grpo_loss(cells, logp, logp, adv, GrpoConfig(kl_beta=0.5))
    assert with_kl.kl.item() == 0 and with_kl.clip_fraction.item() == 0  # ratio 1, reference = policy


SHAPE = FreshModelShape(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1)


@pytest.mark.parametrize("kit", KITS, ids=lambda kit: kit.name)
def test_grpo_raises_a_plugged_reward_on_a_tiny_model(kit, tokenizer):
    family, tok = kit.family, kit.tokenizer(tokenizer)
    model = tiny_model(family, tok, shape=SHAPE)
    cfg, renderer = model.config, family.make_renderer(tok, SPEC.num_codebooks)
    grpo = GrpoConfig(group_size=6, max_new_frames=20, kl_beta=0.0)
    rewards = build_rewards({TOY: 1.0})
    prompts = [build_prompt(renderer, TTSRequest(t), cfg.audio_stream_bos_id, cfg.audio_stream_eos_id)
               for t in ("hello world", "مرحبا بكم")]
    batch = left_pad(prompts, renderer.pad_id)
    group = [p for p in prompts for _ in range(grpo.group_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    means = []
    for step in range(STEPS):
        gen = GenerationConfig(max_new_frames=grpo.max_new_frames, top_k=None, top_p=None, ras_window=0, seed=step)
        model.eval()
        result = generate_from_ids(model, batch["input_ids"], batch["attention_mask"], batch["audio_ids"], gen,
                                   sync_ranks=False, repeats=grpo.group_size)
        model.train()
        total = rewards.score(make_samples(result.codes, ["x"] * len(group), result.finished, spec=SPEC)).total
        means.append(float(total.mean()))
        scored = scoring_batch([p.input_ids for p in group], [p.audio_ids for p in group], result.delayed,
                               result.free, cfg, renderer.pad_id)
        cells = cell_logprobs(model, scored)
        terms = grpo_loss(cells, cells.logp.detach(), None,
                          group_advantages(torch.tensor(total, dtype=torch.float32), grpo.group_size), grpo)
        opt.zero_grad()
        (terms.loss_sum / len(group)).backward()
        opt.step()
    first, last = sum(means[:10]) / 10, sum(means[-10:]) / 10
    assert last - first >= 0.1, (first, last)


@pytest.mark.parametrize("rewards, message", [
    ('{"no_such_reward": 1.0}', "error: reward 'no_such_reward' is neither a built-in"),
    ('{"cer": 1.0}', "error: the cer reward needs a local Whisper folder"),
    ('{"cer": -1.0}', "rewards: weights must be positive numbers"),
])
def test_a_bad_reward_is_one_error_line_before_any_rendezvous(rewards, message, random_data, monkeypatch, capsys):
    from launch import train as launcher

    monkeypatch.setattr("higgs_ds.train.distributed.init_distributed", lambda *a: pytest.fail("rendezvous"))
    args = ["objective=grpo", f"rewards={rewards}", f"data.shards={random_data['train']}", "data.eval_shards=null",
            f"data.tokenizer={random_data['tokenizer']}"]
    assert launcher.main(["--config", "recipes/demo.yaml", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
