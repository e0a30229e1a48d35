"""The `ModelFamily` contract, written once and run for every family (the built-in ones and the test-only
plain Llama family): logits equal to the family's reference, checkpoints that round-trip in every export
layout, a loss that catches the copy-your-input bug, generation equal to a plain greedy loop, and training
that resumes bit for bit from the config the run records."""

from __future__ import annotations

import copy
import io
import json
import math

import pytest
import torch

import higgs_ds.models.loss as loss_mod
from higgs_ds.inference import GenerationConfig, TTSRequest, build_prompt, generate
from higgs_ds.models import family_of
from higgs_ds.models.loss import LossWeights, combine
from higgs_ds.models.pretrained import from_pretrained
from tests.data.synthetic import SPEC
from tests.families.kits import KITS, render_batch, tiny_model, two_utterances
from tests.model_utils import mean_tail_audio_loss

K, CODES = SPEC.num_codebooks, SPEC.codebook_size


@pytest.fixture(params=KITS, ids=lambda kit: kit.name)
def case(request, tokenizer):
    """(family, tokenizer, kit, a fresh model of the family with weights away from their init)."""
    kit = request.param
    family, tok = kit.family, kit.tokenizer(tokenizer)
    model = tiny_model(family, tok).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms away from 1, so a missing norm shows
    return family, tok, kit, model


def _forward(model, batch, **labels):
    return model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], **labels)


def test_logits_equal_the_family_reference(case):
    family, tok, kit, model = case
    batch = render_batch(family, tok, model, two_utterances(0))
    with torch.no_grad():
        out = _forward(model, batch)
        want_audio, want_text = kit.reference(model, batch)
        got_audio = model.audio_logits(out.hidden_states[out.audio_out_mask])
    assert got_audio.shape[1:] == (K, CODES + 2) and got_audio.shape[0] > 0
    assert (got_audio - want_audio[out.audio_out_mask]).abs().max() <= 1e-5
    if want_text is not None:
        real = batch["attention_mask"].bool()
        assert (model.text_logits(out.hidden_states)[real] - want_text[real]).abs().max() <= 1e-5


def test_checkpoint_round_trips_in_every_export_layout(case, tmp_path):
    family, tok, _, model = case
    state = model.state_dict()
    for layout in family.export_layouts:
        folder = tmp_path / layout
        family.save_checkpoint(state, model.config, folder, layout, None, "50KB")  # sharded, with an index
        assert family_of(folder) is family, layout
        loaded = from_pretrained(folder)
        assert type(loaded) is type(model)
        got = loaded.state_dict()
        assert set(got) == set(state), layout
        assert all(torch.equal(got[k], v) for k, v in state.items()), layout


def _random_code_loss(family, tok, steps=120, seed=0) -> float:
    """Train on i.i.d. random codes where every position is an audio-out row labelled with its own input
    code: a shifted loss cannot beat chance, ln(1024); an unshifted one copies its input."""
    model = tiny_model(family, tok, seed)
    cfg, b, rows = model.config, 4, 48
    ids = torch.full((b, rows), cfg.audio_out_token_idx)

    def step_parts(model, g):
        codes = torch.randint(0, CODES, (b * rows, K), generator=g)
        out = model(ids, codes, labels=torch.full_like(ids, -100), audio_labels=codes.clone())
        return combine(out.loss_sums, LossWeights())

    return mean_tail_audio_loss(model, step_parts, steps, seed)


def test_shifted_loss_stays_at_chance_on_random_codes(case):
    family, tok, _, _ = case
    assert _random_code_loss(family, tok) > math.log(CODES) - 0.1


def test_the_leak_guard_catches_an_unshifted_loss(case, monkeypatch):
    family, tok, _, _ = case
    monkeypatch.setattr(loss_mod, "shifted_targets", lambda labels, audio_labels, mask: (labels, audio_labels))
    assert _random_code_loss(family, tok) < math.log(CODES) - 1.0


def test_generation_equals_a_plain_greedy_loop(case):
    """generate() (KV cache, the family's prompt and stopping rule) against full forwards, one row at a time."""
    family, tok, _, model = case
    renderer, cfg = family.make_renderer(tok, K), model.config
    bos, eos = cfg.audio_stream_bos_id, cfg.audio_stream_eos_id
    greedy = GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=2 * K + 2)
    for utt in two_utterances(1):
        request = TTSRequest(utt.text, ref_text=utt.ref_text, ref_codes=utt.ref_codes)
        result = generate(model, renderer, [request], greedy, sync_ranks=False)
        prompt = build_prompt(renderer, request, bos, eos)
        ids, audio = list(prompt.input_ids), prompt.audio_ids
        state = family.decoding_state(1, K, bos, eos, "cpu")
        for _ in range(greedy.max_new_frames):
            with torch.no_grad():
                hidden = model(torch.tensor([ids]), audio).hidden_states[:, -1]
                row = state.append(model.audio_logits(hidden).argmax(-1))
            if bool(state.finished.all()):
                break
            ids.append(cfg.audio_out_token_idx)
            audio = torch.cat([audio, row])
        assert torch.equal(result.delayed[0], state.segments()[0]), utt.id
        assert result.finished[0] == bool(state.finished[0])


def _train(model, optimizer, batch, steps) -> list[float]:
    losses = []
    for _ in range(steps):
        parts = combine(_forward(model, batch, labels=batch["labels"], audio_labels=batch["audio_labels"]).loss_sums,
                        LossWeights())
        optimizer.zero_grad()
        parts.loss.backward()
        optimizer.step()
        losses.append(parts.loss.item())
    return losses


def test_training_resumes_bit_exactly_from_the_recorded_config(case):
    """2 + 2 steps through a save (the config as run metadata records it, weights, optimizer state) equal 4."""
    family, tok, _, model = case
    model.train()
    batch = render_batch(family, tok, model, two_utterances(2))
    start = copy.deepcopy(model.state_dict())
    straight_opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    straight = _train(model, straight_opt, batch, 4)

    first = family.build_model(model.config)
    first.load_state_dict(start)
    first_opt = torch.optim.AdamW(first.parameters(), lr=1e-3)
    losses = _train(first, first_opt, batch, 2)
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": first_opt.state_dict()}, saved)
    recorded = json.loads(json.dumps(family.config_to_dict(first.config)))

    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed = family.build_model(family.config_from_dict(recorded, None))
    resumed.load_state_dict(state["model"])
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    resumed_opt.load_state_dict(state["optim"])
    losses += _train(resumed, resumed_opt, batch, 2)
    assert losses == straight
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
