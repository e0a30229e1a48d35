"""Rewards for preference optimisation and best-of-N selection (see `base.py` for the interface, `speech.py`
for the built-ins and `make_samples`, `preflight.py` for the file-only checks)."""

from higgs_ds.rewards.base import BUILTINS, Reward, RewardResult, RewardSample, RewardSet, build_rewards, resolve_plugin
from higgs_ds.rewards.preflight import check_rewards
from higgs_ds.rewards.speech import (
                                   REWARD_RATES_FILE,
                                   fit_chars_per_second,
                                   make_samples,
                                   read_chars_per_second,
                                   save_chars_per_second,
)

__all__ = ["BUILTINS", "REWARD_RATES_FILE", "Reward", "RewardResult", "RewardSample", "RewardSet", "build_rewards",
           "check_rewards", "fit_chars_per_second", "make_samples", "read_chars_per_second", "resolve_plugin",
           "save_chars_per_second"]
