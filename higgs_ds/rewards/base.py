"""The reward interface shared by GRPO, `prepare_data preferences` and best-of-N generation.

A reward is a callable taking a list of `RewardSample` and returning one float per sample (higher is
better; the built-ins lie in [0, 1]). `None` for a sample means "not defined here" (speaker similarity
for a prompt without a reference voice): that reward is left out of the sample's weighted sum, the
remaining weights are renormalised, and the omission is counted.

`rewards:` in a recipe (or `--rewards` on a command line) maps names to weights. A name is a built-in
(`BUILTINS`, filled by `higgs_ds.rewards.speech`) or a user's `"package.module:function"`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from higgs_ds.errors import ConfigError, UserError


@dataclass
class RewardSample:
    """One generated sample, as every reward sees it."""

    codes: torch.Tensor  # LongTensor [T, K]: undelayed codec codes (BOS/EOS dropped)
    text: str  # the prompt's text (what should have been said)
    sample_rate: int  # of `audio` and `reference_audio`
    audio: np.ndarray | None = None  # 1-D float32, decoded only when a reward needs audio
    reference_audio: np.ndarray | None = None  # the prompt's reference voice, or None (zero-shot)
    finished: bool = True  # the decoder's stopping rule fired before the frame limit
    meta: dict = field(default_factory=dict)  # e.g. "frame_rate"
    _resampled: dict = field(default_factory=dict, repr=False, compare=False)  # (which, rate) -> waveform

    def audio_at(self, rate: int) -> np.ndarray | None:
        """`audio` at `rate` (resampled once, then shared by every reward that asks for that rate)."""
        return self._at("audio", self.audio, rate)

    def reference_at(self, rate: int) -> np.ndarray | None:
        return self._at("reference", self.reference_audio, rate)

    def _at(self, which: str, wav: np.ndarray | None, rate: int) -> np.ndarray | None:
        if wav is None:
            return None
        if (which, rate) not in self._resampled:
            from higgs_ds.quality.signal import resample

            self._resampled[which, rate] = resample(wav, self.sample_rate, rate)
        return self._resampled[which, rate]


RewardFn = Callable[[list[RewardSample]], Sequence[float | None]]


@dataclass
class Reward:
    """A named reward: the callable and whether it reads decoded audio."""

    name: str
    fn: RewardFn
    needs_audio: bool = False


# name -> factory(context dict) -> Reward. Built-ins register themselves in higgs_ds.rewards.speech.
BUILTINS: dict[str, Callable[[dict], Reward]] = {}


def resolve_plugin(spec: str) -> Reward:
    """`"package.module:function"` -> a Reward, assumed to need audio (decoded for it) unless the function says
    otherwise with an attribute `needs_audio = False` (a reward of the codes alone)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"reward {spec!r} is neither a built-in ({', '.join(sorted(BUILTINS))}) nor "
                          "'package.module:function'", where="rewards")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward {spec!r} cannot be imported ({type(e).__name__}: {e})", where="rewards",
                          fix="check the module path and that it is importable on every rank") from None
    if not callable(fn):
        raise ConfigError(f"reward {spec!r} is not callable", where="rewards")
    return Reward(spec, fn, needs_audio=bool(getattr(fn, "needs_audio", True)))


@dataclass
class RewardResult:
    """Per sample: the weighted total and each component (NaN where a reward left the sample out)."""

    total: np.ndarray  # [N]
    components: dict[str, np.ndarray]  # name -> [N], NaN = left out
    left_out: dict[str, int]  # name -> number of samples the reward did not score


class RewardSet:
    """Weighted rewards. `score(samples)` checks each reward's output (length, finite values)."""

    def __init__(self, rewards: list[Reward], weights: dict[str, float]) -> None:
        self.rewards, self.weights = rewards, weights

    @property
    def needs_audio(self) -> bool:
        return any(r.needs_audio for r in self.rewards)

    def score(self, samples: list[RewardSample]) -> RewardResult:
        n = len(samples)
        components, left_out = {}, {}
        for reward in self.rewards:
            values = list(reward.fn(samples))
            if len(values) != n:
                raise UserError(f"reward {reward.name!r} returned {len(values)} values for {n} samples",
                                where="rewards", fix="return one float (or None) per sample")
            arr = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
            bad = [v for v in values if v is not None and not math.isfinite(float(v))]
            if bad:
                raise UserError(f"reward {reward.name!r} returned a non-finite value ({bad[0]})", where="rewards",
                                fix="return None for a sample the reward cannot score")
            components[reward.name] = arr
            left_out[reward.name] = int(np.isnan(arr).sum())
        total = np.zeros(n)
        weight_sum = np.zeros(n)
        for name, arr in components.items():
            w = self.weights[name]
            have = ~np.isnan(arr)
            total[have] += w * arr[have]
            weight_sum[have] += w
        total = np.where(weight_sum > 0, total / np.maximum(weight_sum, 1e-12), 0.0)
        return RewardResult(total, components, left_out)


def build_rewards(weights: dict[str, float], context: dict | None = None) -> RewardSet:
    """Weights by name -> a RewardSet. `context` carries what built-ins need (device, model folders,
    the duration rate...). Raises ConfigError on an unknown name or a non-positive weight."""
    if not weights:
        raise ConfigError("no rewards given", where="rewards", fix="e.g. rewards: {dnsmos: 1.0, stop: 0.5}")
    rewards = []
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"reward weight {w!r} must be a positive number", where=f"rewards.{name}")
        rewards.append(BUILTINS[name](context or {}) if name in BUILTINS else resolve_plugin(name))
    return RewardSet(rewards, {r.name: float(weights[n]) for r, n in zip(rewards, weights, strict=True)})
