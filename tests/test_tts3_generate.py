"""Higgs TTS 3 generation (KV cache, batched, left-padded) against a plain greedy loop written here from
the stopping rule: during the first K steps codebooks above the step index are BOC and EOC is not looked
at; afterwards the first row whose codebook 0 is EOC starts a countdown of K-2 more rows."""

import numpy as np
import pytest
import torch

from higgs_ds.data.delay_pattern import build_delay_pattern, revert_delay_pattern
from higgs_ds.inference import GenerationConfig, TTSRequest, generate
from higgs_ds.models.higgs_tts3.decoding import Tts3DelayState
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model
from higgs_ds.models.higgs_tts3.prompt import Tts3Renderer
from tests.tts3_utils import tiny_model_config, tiny_tts3_tokenizer

K, BOC, EOC = 8, 1024, 1025


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tts3_tokenizer()
    torch.manual_seed(0)
    model = HiggsTTS3Model(tiny_model_config(tokenizer)).eval()
    with torch.no_grad():  # the random model repeats one code; make codebook 0's EOC outscore it, so rows end
        model.audio_table.weight[EOC] = 2 * model.audio_table.weight[837]
    return model, Tts3Renderer(tokenizer, K)


def _greedy_loop(model, renderer, text, ref_text=None, ref_codes=None, max_rows=200):
    sp = renderer.special
    enc = lambda s: renderer.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    ids, audio = [sp.tts], []
    if ref_codes is not None:
        ref = torch.as_tensor(ref_codes)
        ids += [sp.ref_text, *enc(ref_text), sp.ref_audio] + [sp.audio_in] * (ref.shape[1] + K - 1)
        audio += list(build_delay_pattern(ref, BOC, EOC).T)
    ids += [sp.text, *enc(text), sp.audio]
    rows, countdown = [], None
    for step in range(max_rows):
        input_ids = torch.tensor([ids + [sp.audio_out] * len(rows)])
        audio_ids = torch.stack(audio + rows) if audio + rows else torch.zeros((0, K), dtype=torch.long)
        with torch.no_grad():
            hidden = model(input_ids, audio_ids).hidden_states[0, -1]
            row = model.audio_logits(hidden).argmax(-1)
        row[step + 1:] = BOC
        rows.append(row)
        if step >= K:
            if countdown is not None:
                countdown -= 1
            elif row[0] == EOC:
                countdown = K - 2
            if countdown == 0:
                return torch.stack(rows).T, True
    return torch.stack(rows).T, False


def test_generation_matches_independent_greedy_loop(setup):
    model, renderer = setup
    ref = np.random.default_rng(0).integers(0, 1024, (K, 6))
    requests = [TTSRequest("hello world", id="zero-shot"),
                TTSRequest("one two three", ref_text="hello", ref_codes=ref, id="clone")]
    result = generate(model, renderer, requests, GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=200))
    for i, r in enumerate(requests):
        want, finished = _greedy_loop(model, renderer, r.text, r.ref_text, r.ref_codes)
        assert finished and result.finished[i] and want.shape[1] == 2 * K - 1  # EOC from step K on, K-2 more
        got = result.delayed[i][:, 1:]  # column 0 is the state's bookkeeping BOC column, never fed
        assert torch.equal(got, want), r.id
        assert torch.equal(result.codes[i], revert_delay_pattern(want).clip(0, 1023))
        assert result.codes[i].shape[1] == want.shape[1] - (K - 1)


def test_stopping_rule_on_scripted_rows():
    state = Tts3DelayState(1, K, BOC, EOC, "cpu")
    eoc_row = torch.full((1, K), EOC)
    for _ in range(K):  # EOC during the first K steps is no stop
        state.append(eoc_row)
    assert not state.finished.any()
    state.append(torch.full((1, K), 5))
    state.append(eoc_row)  # countdown starts: K-2 more rows
    for _ in range(K - 3):
        state.append(torch.full((1, K), 3))
        assert not state.finished.any()
    state.append(torch.full((1, K), 3))
    assert state.finished.all() and int(state.length[0]) == 1 + K + 2 + K - 2
    assert state.columns[1][0].tolist() == [EOC] + [BOC] * 7  # codebooks above the step index forced
