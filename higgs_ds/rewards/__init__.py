"""Rewards for preference optimisation and best-of-N selection (see `base.py` for the interface)."""

from higgs_ds.rewards.base import (BUILTINS, Reward, RewardResult, RewardSample, RewardSet, build_rewards,
                                   resolve_plugin)

__all__ = ["BUILTINS", "Reward", "RewardResult", "RewardSample", "RewardSet", "build_rewards", "resolve_plugin"]
