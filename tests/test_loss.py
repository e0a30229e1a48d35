"""Loss semantics: next-token shift, zero-label batches, uniform bounds at step 0."""

import math

import pytest
import torch
import torch.nn.functional as F

from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.models.loss import LossSums, LossWeights, combine, target_counts
from tests.model_utils import loss_sums, random_batch

SEGMENTS = [[(2, 4, "in"), (8, 7, "out")], [(3, 9, "out"), (14, 5, "out")]]


def _model_and_batch(vocab=512, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(vocab_size=vocab)
    model = HiggsAudioModel(cfg)
    batch = random_batch(cfg, SEGMENTS, seq_len=22, pad={0: 3})
    # real audio labels: column 0 of every segment is never a target (delay-pattern BOS column)
    out_mask = batch["input_ids"] == cfg.audio_out_token_idx
    first = out_mask & ~torch.nn.functional.pad(out_mask, (1, 0))[:, :-1]
    batch["audio_labels"][first[out_mask]] = -100
    return model, batch


def _forward(model, batch):
    return model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])


def test_losses_equal_shifted_cross_entropy_on_full_logits():
    model, b = _model_and_batch()
    out = _forward(model, b)
    sums = loss_sums(model, out, b["labels"], b["audio_labels"])

    text_logits = model.text_logits(out.hidden_states)
    want_text = F.cross_entropy(text_logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), reduction="sum")
    torch.testing.assert_close(sums.text_sum, want_text)
    assert sums.text_count == (b["labels"][:, 1:] != -100).sum()

    # Boson's formulation: a global shift over the concatenated audio-out rows
    audio_logits = model.audio_logits(out.hidden_states[out.audio_out_mask])
    for k in range(model.config.audio_num_codebooks):
        want = F.cross_entropy(audio_logits[:-1, k], b["audio_labels"][1:, k], reduction="sum")
        torch.testing.assert_close(sums.audio_sum[k], want)
        assert sums.audio_count[k] == (b["audio_labels"][1:, k] != -100).sum()


def test_batch_without_valid_labels_gives_zero_loss_with_gradients():
    model, b = _model_and_batch()
    b["labels"].fill_(-100)
    b["audio_labels"].fill_(-100)
    parts = combine(loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"]), LossWeights())
    assert parts.loss.item() == 0.0
    parts.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_text_only_batch_still_runs_every_module():
    """ZeRO-3 needs the same module calls on every rank: no audio must not skip the audio path."""
    model, _ = _model_and_batch()
    called = set()
    for name, mod in model.named_modules():
        if name:
            mod.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    cfg = model.config
    b = random_batch(cfg, [[], []], seq_len=10)
    assert b["audio_ids"].shape == (0, 8) and b["audio_labels"].shape == (0, 8)
    parts = combine(loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"]), LossWeights())
    parts.loss.backward()
    assert parts.audio.item() == 0.0
    expected = {n for n, m in model.named_modules() if n and not list(m.children())}
    assert expected <= called, sorted(expected - called)


def test_weights_are_applied_per_component():
    model, b = _model_and_batch()
    sums = loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"])
    w = LossWeights(text=0.5, audio=2.0, codebooks=[1.0] + [0.0] * 7)
    parts = combine(sums, w)
    torch.testing.assert_close(parts.audio, sums.audio_sum[0] / sums.audio_count[0])
    torch.testing.assert_close(parts.loss, 0.5 * parts.text + 2.0 * parts.audio)
    with pytest.raises(ValueError, match="codebook weights"):
        combine(sums, LossWeights(codebooks=[1.0, 1.0]))


def test_step0_losses_sit_at_uniform_bounds():
    vocab = 128256
    model, b = _model_and_batch(vocab=vocab)
    with torch.no_grad():
        parts = combine(loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"]), LossWeights())
    assert abs(parts.text.item() - math.log(vocab)) < 0.05
    # ~20 targets per codebook: allow sampling noise per codebook, less for their mean
    assert abs(parts.audio_per_codebook.mean().item() - math.log(1026)) < 0.05
    for cb in parts.audio_per_codebook:
        assert abs(cb.item() - math.log(1026)) < 0.15


def test_global_normaliser_gives_the_full_batch_mean_gradient():
    """2 ranks x 2 micro-batches as the loop runs them (DeepSpeed scales each backward by 1/GAS and
    averages over ranks) give the gradient of the mean over all four micro-batches' targets, even for
    a codebook with fewer valid targets than micro-batches x ranks."""
    model, _ = _model_and_batch()
    cfg = model.config
    micro = [random_batch(cfg, [[(2, 6, "out")]], seq_len=12, seed=s) for s in range(4)]
    for i, b in enumerate(micro):  # codebook 7 is labelled once in the whole step
        b["audio_labels"][:, 7] = -100
        if i == 2:
            b["audio_labels"][3, 7] = 5
    gas, world, w = 2, 2, LossWeights()

    def grads(loss_fn):
        model.zero_grad()
        loss_fn()
        return [p.grad.clone() for p in model.parameters()]

    def run_like_the_loop():
        global_counts = sum(target_counts(b, cfg.audio_out_token_idx) for b in micro)
        assert global_counts[1 + 7] == 1
        for b in micro:
            parts = combine(loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"]), w,
                            global_counts.clamp(min=1) / (gas * world))
            (parts.loss / gas / world).backward()  # DeepSpeed: 1/GAS per micro-batch, mean over ranks

    def full_batch_mean():
        sums = [loss_sums(model, _forward(model, b), b["labels"], b["audio_labels"]) for b in micro]
        total = LossSums(*(sum(getattr(x, f) for x in sums) for f in
                           ("text_sum", "text_count", "text_correct", "audio_sum", "audio_count", "audio_correct")))
        combine(total, w).loss.backward()

    for a, b in zip(grads(run_like_the_loop), grads(full_batch_mean), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
