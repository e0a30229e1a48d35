"""Sequence log-probabilities over free cells, for every family: the scoring forward equals the sum a plain
sampling loop computes on the cells it sampled (forced cells left out), stored samples keep exactly their
labelled cells, and the next-token shift is guarded as for the cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

import higgs_ds.models.loss as loss_mod
from higgs_ds.constants import IGNORE_INDEX
from higgs_ds.inference import TTSRequest, build_prompt
from higgs_ds.train.preference.logprobs import cell_logprobs, restrict_to_free, scoring_batch
from tests.data.synthetic import SPEC
from tests.families.kits import KITS, render_batch, tiny_model, two_utterances
from tests.model_utils import mean_tail_audio_loss

K, CODES = SPEC.num_codebooks, SPEC.codebook_size


@pytest.fixture(params=KITS, ids=lambda kit: kit.name)
def case(request, tokenizer):
    kit = request.param
    family, tok = kit.family, kit.tokenizer(tokenizer)
    return family, tok, tiny_model(family, tok).eval()


def test_stored_samples_keep_exactly_their_labelled_cells(case):
    """The renderer's labels already leave out BOC and what follows each codebook's stop: the decoding state's
    replay agrees cell for cell, and the excluded cells are the forced ones."""
    family, tok, model = case
    batch = render_batch(family, tok, model, two_utterances(0))
    kept = restrict_to_free(batch, family, model.config)
    assert torch.equal(kept["audio_labels"], batch["audio_labels"])
    assert (batch["audio_labels"] != IGNORE_INDEX).any()


def test_a_decoder_that_stops_off_the_diagonal_frees_only_what_it_sampled():
    """v2's rule: EOS first sampled at row 2 forces rows 0-1 of that column, then the diagonal."""
    from higgs_ds.models.delay_decoding import DelayPatternState

    state = DelayPatternState(1, 4, 1024, 1025, "cpu")
    for _ in range(4):
        state.append(torch.tensor([[5, 6, 7, 8]]))
    state.append(torch.tensor([[5, 6, 1025, 8]]))  # column 5
    state.append(torch.tensor([[5, 6, 7, 8]]))  # column 6: rows < 3 forced, row 3 sampled, then finished
    free = state.free_cells()[0]
    assert free.shape == (4, 7) and bool(state.finished[0])
    assert free[:, 0].sum() == 0 and free[:, 1].tolist() == [True, False, False, False]  # BOS triangle
    assert free[:, 5].tolist() == [False, False, True, True] and free[:, 6].tolist() == [False, False, False, True]


def _sample_by_hand(family, model, prompt, temperature, generator, frames):
    """Full forwards, one column at a time: sample from softmax(logits / T), let the decoding state force its
    cells, and sum log-probs over the cells it reports as sampled."""
    cfg = model.config
    state = family.decoding_state(1, K, cfg.audio_stream_bos_id, cfg.audio_stream_eos_id, "cpu")
    ids, audio, total = list(prompt.input_ids), prompt.audio_ids, 0.0
    for _ in range(frames):
        with torch.no_grad():
            logits = model.audio_logits(model(torch.tensor([ids]), audio).hidden_states[:, -1]).float() / temperature
        logp = torch.log_softmax(logits, -1)
        tokens = torch.multinomial(logp.exp().view(K, -1), 1, generator=generator).view(1, K)
        column = state.append(tokens)
        total += float((logp.gather(-1, column.clamp(max=logp.shape[-1] - 1).unsqueeze(-1)).view(1, K)
                        * state.free[-1]).sum())
        if bool(state.finished.all()):
            break
        ids.append(cfg.audio_out_token_idx)
        audio = torch.cat([audio, column])
    return state, total


def test_the_scoring_forward_equals_the_samplers_log_probability(case):
    family, tok, model = case
    renderer, cfg = family.make_renderer(tok, K), model.config
    g = torch.Generator().manual_seed(3)
    prompts, segments, free, want = [], [], [], []
    for utt in two_utterances(1):
        prompt = build_prompt(renderer, TTSRequest(utt.text, ref_text=utt.ref_text, ref_codes=utt.ref_codes),
                              cfg.audio_stream_bos_id, cfg.audio_stream_eos_id)
        state, total = _sample_by_hand(family, model, prompt, 0.7, g, 2 * K + 2)
        prompts.append(prompt)
        segments.append(state.segments()[0])
        free.append(state.free_cells()[0])
        want.append(total)
    batch = scoring_batch([p.input_ids for p in prompts], [p.audio_ids for p in prompts], segments, free, cfg,
                          renderer.pad_id)
    with torch.no_grad():
        got = cell_logprobs(model, batch, temperature=0.7)
    assert torch.allclose(got.per_sample(), torch.tensor(want), atol=1e-4)
    assert got.counts().tolist() == [float(f.sum()) for f in free]
    assert all(f[:, 1:K].sum() < K * (K - 1) for f in free)  # the BOC triangle was there, and left out


def _random_code_nll(family, tok, steps=100, seed=0) -> float:
    """Maximise the mean per-cell log-probability on i.i.d. random codes where every row is labelled with its
    own input: a shifted log-prob stays at chance, ln(1024); an unshifted one learns to copy its input."""
    model = tiny_model(family, tok, seed)
    cfg, b, rows = model.config, 2, 32
    ids = torch.full((b, rows), cfg.audio_out_token_idx)

    class Parts:
        def __init__(self, nll):
            self.loss = self.audio = nll

    def step_parts(model, g):
        codes = torch.randint(0, CODES, (b * rows, K), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "audio_ids": codes,
                 "labels": torch.full_like(ids, IGNORE_INDEX), "audio_labels": codes.clone()}
        cells = cell_logprobs(model, batch)
        return Parts(-cells.logp.sum() / cells.mask.sum())

    return mean_tail_audio_loss(model, step_parts, steps, seed, tail=10)


def test_shifted_log_probs_stay_at_chance_on_random_codes(tokenizer):
    """The baseline of the guard below (one family: the shift is the loss's own, shared by all of them)."""
    kit = KITS[0]
    assert _random_code_nll(kit.family, kit.tokenizer(tokenizer)) > math.log(CODES) - 0.1


def test_the_leak_guard_catches_an_unshifted_log_prob(case, monkeypatch):
    family, tok, _ = case
    monkeypatch.setattr(loss_mod, "shifted_targets", lambda labels, audio_labels, mask: (labels, audio_labels))
    assert _random_code_nll(family, tok) < math.log(CODES) - 0.5  # shifted: never below chance - 0.1
