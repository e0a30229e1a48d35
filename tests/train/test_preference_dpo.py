"""DPO on a tiny model: the loss equals a hand-written one on log-probabilities taken from the model's own
fused cross-entropy (one sample at a time), for the plain, cDPO, IPO and length-normalised variants; the LoRA
reference (adapters disabled) is the base model exactly."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.models import get_family
from higgs_ds.models.loss import target_counts
from higgs_ds.train.lora import LoraConfig, apply_lora
from higgs_ds.train.preference.config import DpoConfig
from higgs_ds.train.preference.dpo import dpo_loss
from higgs_ds.train.preference.logprobs import cell_logprobs, restrict_to_free
from higgs_ds.train.preference.reference import adapters_disabled
from tests.data.synthetic import SPEC
from tests.families.kits import KITS, tiny_model

K, CODES = SPEC.num_codebooks, SPEC.codebook_size
FAMILY = get_family("higgs_v2_dualffn")


@pytest.fixture
def models(tokenizer):
    ref = tiny_model(FAMILY, tokenizer).eval()
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return policy, ref


def _pairs(seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    codes = lambda n: rng.integers(0, CODES, (K, n))  # noqa: E731
    return [Utterance("a", "hello world", codes(6), rejected_codes=codes(9)),
            Utterance("b", "مرحبا بكم", codes(5), ref_text="one two", ref_codes=codes(4), rejected_codes=codes(3))]


def _collate(tokenizer, model, utts, family=FAMILY):
    renderer = family.make_renderer(tokenizer, K)
    return renderer.collator(CollatorConfig.from_model_config(model.config))(
        [renderer.render(u, PromptConfig()) for u in utts])


def _by_hand(model, tokenizer, utt: Utterance, family=FAMILY) -> tuple[float, float]:
    """(log-prob, scored cells) of one sample from the model's fused CE: -sum of the per-codebook CE sums."""
    batch = _collate(tokenizer, model, [utt], family)
    with torch.no_grad():
        sums = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                     audio_labels=batch["audio_labels"]).loss_sums
    return -float(sums.audio_sum.sum()), float(target_counts(batch, model.config.audio_head_token_ids)[1:].sum())


def _side(utts, rejected: bool):
    return [Utterance(u.id, u.text, u.rejected_codes if rejected else u.codes, ref_text=u.ref_text,
                      ref_codes=u.ref_codes) for u in utts]


@pytest.mark.parametrize("cfg", [DpoConfig(beta=0.5), DpoConfig(beta=0.5, label_smoothing=0.2),
                                 DpoConfig(beta=0.5, ipo=True), DpoConfig(beta=5.0, length_normalize=True)],
                         ids=["sigmoid", "cdpo", "ipo", "length_normalized"])
def test_the_dpo_loss_equals_a_hand_written_one(models, tokenizer, cfg):
    policy, ref = models
    utts = _pairs(0)
    logps = {}
    for side, rejected in (("chosen", False), ("rejected", True)):
        batch = restrict_to_free(_collate(tokenizer, policy, _side(utts, rejected)), FAMILY, policy.config)
        with torch.no_grad():
            pol, rf = cell_logprobs(policy, batch), cell_logprobs(ref, batch)
        logps[side] = (pol.per_sample(), rf.per_sample(), pol.counts())
    got = dpo_loss(logps["chosen"][0], logps["rejected"][0], logps["chosen"][1], logps["rejected"][1], cfg,
                   logps["chosen"][2], logps["rejected"][2])
    for i, u in enumerate(utts):
        (pc, n_c), (pr, n_r) = (_by_hand(policy, tokenizer, s) for s in (_side([u], False)[0], _side([u], True)[0]))
        (rc, _), (rr, _) = (_by_hand(ref, tokenizer, s) for s in (_side([u], False)[0], _side([u], True)[0]))
        if cfg.length_normalize:
            pc, rc, pr, rr = pc / n_c, rc / n_c, pr / n_r, rr / n_r
        h = (pc - rc) - (pr - rr)
        log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
        eps = cfg.label_smoothing
        want = ((h - 1 / (2 * cfg.beta)) ** 2 if cfg.ipo else
                -(1 - eps) * log_sigmoid(cfg.beta * h) - eps * log_sigmoid(-cfg.beta * h))
        assert got.loss[i].item() == pytest.approx(want, abs=5e-4), (i, h)  # float32 sums of ~100 cells
        assert got.chosen_reward[i].item() == pytest.approx(cfg.beta * (pc - rc), abs=5e-4)
        assert abs(h) > 0.005  # the policy differs from the reference: the check is not 0 == 0


@pytest.mark.parametrize("kit", [k for k in KITS if k.name != FAMILY.name], ids=lambda k: k.name)
def test_dpo_trains_every_family_in_process(kit, tokenizer):
    """The other families: the loss equals the hand-written one at the start, and a few DPO steps from the
    reference make every pair preferred (accuracy 1, loss below log 2)."""
    family, tok, cfg = kit.family, kit.tokenizer(tokenizer), DpoConfig(beta=0.5)
    ref = tiny_model(family, tok).eval()
    policy = copy.deepcopy(ref).train()
    utts = _pairs(2)
    batch = _collate(tok, ref, _side(utts, False) + _side(utts, True), family)
    batch = restrict_to_free(batch, family, ref.config)
    with torch.no_grad():
        ref_lp = cell_logprobs(ref, batch).per_sample()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        pol = cell_logprobs(policy, batch).per_sample()
        terms = dpo_loss(pol[:2], pol[2:], ref_lp[:2], ref_lp[2:], cfg)
        losses.append(terms.loss.detach())
        opt.zero_grad()
        terms.loss.mean().backward()
        opt.step()
    hand = [_by_hand(ref, tok, s, family)[0] for s in _side(utts, False) + _side(utts, True)]
    assert ref_lp.tolist() == pytest.approx(hand, abs=2e-3)
    assert losses[0].tolist() == pytest.approx([math.log(2)] * 2, abs=1e-5)  # policy = reference: h = 0
    assert (losses[-1] < math.log(2) - 0.05).all() and bool((terms.chosen_reward > terms.rejected_reward).all())


def test_the_lora_reference_is_the_base_model(models, tokenizer):
    _, base = models
    adapted = copy.deepcopy(base)
    apply_lora(adapted, LoraConfig(enabled=True, rank=4), FAMILY)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # peft starts B at 0: move it, or the adapters would change nothing
    batch = _collate(tokenizer, base, _side(_pairs(1), False))

    def logits(model):
        with torch.no_grad():
            out = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
            return model.audio_logits(out.hidden_states[out.audio_out_mask])

    want = logits(base)
    assert not torch.allclose(logits(adapted), want, atol=1e-4)
    with adapters_disabled(adapted):
        assert torch.equal(logits(adapted), want)
    assert not torch.allclose(logits(adapted), want, atol=1e-4)  # on again after the block
