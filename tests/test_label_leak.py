"""The label-leak guard: on i.i.d. random codes nothing is predictable, so a correct (shifted) loss
must stay at ln(1024); an unshifted loss lets the model copy its input and collapses towards 0."""

import logging
import math

import pytest
import torch

import higgs_ds.model.loss as loss_mod
from higgs_ds.model.config import tiny_config
from higgs_ds.model.loss import LossWeights, combine
from higgs_ds.model.modeling import HiggsAudioModel
from tests.model_utils import loss_sums, mean_tail_audio_loss


def _random_code_batch(cfg, g, b=4, frames=48):
    """Every position is an audio-out frame whose label is its own (i.i.d. uniform) input code."""
    k = cfg.audio_num_codebooks
    ids = torch.full((b, frames), cfg.audio_out_token_idx)
    codes = torch.randint(0, cfg.audio_codebook_size, (b * frames, k), generator=g)
    return ids, codes, torch.full_like(ids, -100), codes.clone()


def _train_audio_loss(steps=120, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config()

    def step_parts(model, g):
        ids, codes, labels, audio_labels = _random_code_batch(cfg, g)
        return combine(loss_sums(model, model(ids, codes), labels, audio_labels), LossWeights())

    return mean_tail_audio_loss(HiggsAudioModel(cfg), step_parts, steps, seed)


def _unshifted_targets(labels, audio_labels, audio_out_mask):
    return labels, audio_labels  # the community trainer's bug: same-position pairing


def test_shifted_audio_loss_stays_at_chance_on_random_codes():
    assert _train_audio_loss() > math.log(1024) - 0.1


def test_guard_catches_the_unshifted_loss(monkeypatch):
    monkeypatch.setattr(loss_mod, "shifted_targets", _unshifted_targets)
    assert _train_audio_loss() < math.log(1024) - 1.0


@pytest.mark.parametrize("step, extra, warns", [
    (50, {"data/epoch": 0.5}, True),  # near-perfect within the first pass: the targets leak into the input
    (50, {"data/epoch": 3.0}, False),  # the same after three passes: memorisation, not a leak
    (100, {}, True),  # no loader epoch: the first 300 steps stand in for the first pass
    (400, {}, False),
])
def test_early_perfect_audio_accuracy_warns_only_before_a_sample_is_seen_twice(caplog, step, extra, warns):
    from higgs_ds.train.metrics import sanity_checks

    m = {f"acc/audio_cb{k}": 0.99 for k in range(8)} | extra
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        sanity_checks(step, m, vocab=2000, codebook_rows=1026)
    assert ("copying its input" in caplog.text) == warns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        sanity_checks(step, {**m, "acc/audio_cb3": 0.5}, vocab=2000, codebook_rows=1026)
    assert caplog.text == ""
