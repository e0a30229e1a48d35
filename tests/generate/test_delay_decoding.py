"""Delay-pattern decoding invariants and token selection, without a model."""

import pytest
import torch

from higgs_ds.data.delay_pattern import delay_segment_input
from higgs_ds.inference import DelayPatternState, GenerationConfig, codes_from_generated_segment
from higgs_ds.inference.sampling import filter_logits, select_tokens

K = 4
BOS, EOS = 1024, 1025  # stream ids of 1024-code codebooks


def _state(b=1):
    return DelayPatternState(b, K, BOS, EOS, "cpu")


def test_teacher_columns_rebuild_the_training_segment_and_stop_on_the_eos_diagonal():
    codes = torch.randint(0, 1024, (K, 5), generator=torch.Generator().manual_seed(0))
    target = delay_segment_input(codes, BOS, EOS)  # [K, T+K+1], column 0 all BOS
    state = _state()
    for j in range(1, target.shape[1]):
        assert not state.finished.item()
        state.append(target[:, j][None])
    assert state.finished.item()
    (segment,) = state.segments()
    assert torch.equal(segment, target)
    assert torch.equal(codes_from_generated_segment(segment, True, 1024), codes)


def test_lower_triangle_is_forced_and_unfinished_segments_keep_complete_frames():
    state = _state()
    for _ in range(7):
        state.append(torch.full((1, K), 7))  # a model that always says 7, never EOS
    (segment,) = state.segments()
    for j in range(1, K):
        assert (segment[j:, j] == BOS).all() and (segment[:j, j] == 7).all()
    assert not state.finished.item() and segment.shape == (K, 8)
    codes = codes_from_generated_segment(segment, False, 1024)
    assert codes.shape == (K, 8 - K) and (codes == 7).all()


def test_first_eos_in_a_middle_row_forces_the_rows_above_and_finishes_the_diagonal():
    state = _state()
    for _ in range(K):  # past the BOS triangle
        state.append(torch.full((1, K), 3))
    e = 2
    tokens = torch.full((1, K), 3)
    tokens[0, e] = EOS
    column = state.append(tokens)
    assert column[0].tolist() == [EOS, EOS, EOS, 3]
    remaining = K - e - 1
    for i in range(1, remaining + 1):
        assert not state.finished.item()
        column = state.append(torch.full((1, K), 3))
        assert column[0, : e + i].eq(EOS).all()  # one more row forced per column
    assert state.finished.item()
    assert state.segments()[0].shape[1] == 1 + K + 1 + remaining


def test_finished_prompts_are_fed_eos_and_stop_growing():
    state = _state(b=2)
    state.append(torch.tensor([[EOS] * K, [5] * K]))  # prompt 0: EOS in row 0 right after BOS (T = 0)
    for _ in range(K - 1):  # the K-1 columns of its EOS diagonal
        state.append(torch.full((2, K), 5))
    assert state.finished.tolist() == [True, False]
    column = state.append(torch.full((2, K), 5))
    assert (column[0] == EOS).all() and (column[1] == 5).all()
    first, second = state.segments()
    assert first.shape[1] == K + 1 and second.shape[1] == K + 2
    assert codes_from_generated_segment(first, True, 1024).shape == (K, 0)


def test_greedy_and_degenerate_filters_pick_the_argmax():
    logits = torch.randn(3, K, 50, generator=torch.Generator().manual_seed(0))
    argmax = logits.argmax(-1)
    assert torch.equal(select_tokens(logits, GenerationConfig(temperature=0, ras_window=0), None), argmax)
    for cfg in (GenerationConfig(top_k=1, top_p=None, ras_window=0), GenerationConfig(top_k=None, top_p=1e-6,
                                                                                       ras_window=0)):
        g = torch.Generator().manual_seed(1)
        assert torch.equal(select_tokens(logits, cfg, None, g), argmax)


def test_top_k_and_top_p_keep_the_right_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, GenerationConfig(top_k=2, top_p=None)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = filter_logits(logits, GenerationConfig(top_k=None, top_p=0.8)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.8, 0.5 + 0.3 reaches it
    kept = filter_logits(logits, GenerationConfig(top_k=None, top_p=0.81)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]


def test_sampling_is_reproducible_with_a_seed():
    logits = torch.randn(2, K, 50)
    cfg = GenerationConfig(ras_window=0)
    a = select_tokens(logits, cfg, None, torch.Generator().manual_seed(3))
    b = select_tokens(logits, cfg, None, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_ras_redraws_a_token_repeated_in_the_window():
    logits = torch.full((1, 2, 10), -30.0)
    logits[..., 4] = 30.0  # the argmax ...
    logits[0, 0, 6] = 29.0  # ... and, for codebook 0 only, a close second the raw distribution can draw
    history = torch.tensor([[[4, 4, 1], [4, 1, 2]]])  # codebook 0 saw 4 twice, codebook 1 once
    cfg = GenerationConfig(temperature=0, ras_window=3, ras_max_repeats=2)
    draws = torch.stack([select_tokens(logits, cfg, history, torch.Generator().manual_seed(s)) for s in range(40)])
    assert (draws[:, 0, 1] == 4).all()  # not repeated enough: greedy choice kept
    assert set(draws[:, 0, 0].tolist()) == {4, 6}  # redrawn from the raw distribution


@pytest.mark.parametrize("bad", [dict(max_new_frames=0), dict(temperature=-1), dict(top_p=0.0), dict(top_k=-1),
                                 dict(ras_max_repeats=0)])
def test_generation_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="GenerationConfig"):
        GenerationConfig(**bad)
