"""The copy-your-input warning of the training loop's sanity checks. (The label-leak guard itself, random
codes against a shifted and an unshifted loss, runs for every model family in
tests/families/test_family_contract.py.)"""

import logging

import pytest


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
