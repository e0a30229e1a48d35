import pytest
import torch

from higgs_ds.data.delay_pattern import IGNORE_INDEX as I
from higgs_ds.data.delay_pattern import (
    build_delay_pattern,
    delay_segment_input,
    delay_segment_labels,
    revert_delay_pattern,
    segment_positions,
    strip_delayed_segment,
)

B, E = 1024, 1025  # stream BOS / EOS of 1024-code codebooks


def test_matches_reference_example():
    # K=4, T=2, codes a..h: the example of delay_pattern.py's docstring
    a, b, c, d, e, f, g, h = range(10, 18)
    codes = torch.tensor([[a, b], [c, d], [e, f], [g, h]])
    assert delay_segment_input(codes, B, E).tolist() == [
        [B, a, b, E, E, E, E], [B, B, c, d, E, E, E], [B, B, B, e, f, E, E], [B, B, B, B, g, h, E]]
    assert delay_segment_labels(codes, E).tolist() == [
        [I, a, b, E, I, I, I], [I, I, c, d, E, I, I], [I, I, I, e, f, E, I], [I, I, I, I, g, h, E]]


@pytest.mark.parametrize("k,t", [(1, 1), (4, 2), (8, 1), (8, 37), (12, 5)])
def test_revert_is_exact_inverse(k, t):
    codes = torch.randint(0, 1024, (k, t))
    delayed = build_delay_pattern(codes, bos=B, pad=E)
    assert delayed.shape == (k, t + k - 1)
    assert torch.equal(revert_delay_pattern(delayed), codes)
    segment = delay_segment_input(codes, B, E)
    assert segment.shape[1] == segment_positions(t, k) == t + k + 1
    assert torch.equal(strip_delayed_segment(segment), codes)


def test_labels_structure():
    codes = torch.randint(0, 1024, (8, 20))
    labels = delay_segment_labels(codes, E)
    assert (labels[:, 0] == I).all()  # column 0 is never a target
    assert ((labels == E).sum(dim=1) == 1).all()  # one stream EOS per codebook
    assert not (labels == B).any()  # BOS is never a target
    assert torch.equal(revert_delay_pattern(labels)[:, 1:-1], codes)
    assert (delay_segment_labels(codes, E, trained=False) == I).all()


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[K, L\]"):
        build_delay_pattern(torch.zeros(3, dtype=torch.long), B, E)
    with pytest.raises(ValueError, match="shorter"):
        revert_delay_pattern(torch.zeros(8, 3, dtype=torch.long))
