"""Command-line options shared by the launch scripts, kept out of the library modules they configure.

- `add_scorer_args` / `scorer_config`: the offline metrics' flags (`launch/evaluate.py`,
  `launch/generate.py --score`) and the `ScorerConfig` they ask for.
- `add_decoding_args` / `generation_config`: the sampling flags and the `GenerationConfig` they ask for.
- `reward_weights`, `add_reward_args` / `reward_context`: the rewards' flags (`generate.py --select`,
  `prepare_data preferences --rewards`) and the context the built-in rewards read.
- argparse `type=` checks, so that a bad value is refused while the flags are read, before anything
  loads: `bounded` (finite numbers in a range) and its common cases, `device_name` / `device_names`
  (devices this machine has), `byte_size` ("5GB").
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

from higgs_ds.device import device_problem
from higgs_ds.errors import ConfigError, quote
from higgs_ds.quality.scorer import ScorerConfig


def bounded(kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> Callable[[str], int | float]:
    """An argparse `type`: a finite int or float within [low, high] (an open end excludes its bound)."""
    noun = "an integer" if kind is int else "a number"
    bounds = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
    bounds += [f"{'<' if high_open else '<='} {high:g}"] if high is not None else []
    rule = f"{noun} {' and '.join(bounds)}" if bounds else f"a finite {noun[2:].lstrip()}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{quote(text)} is not {noun}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{quote(text)} is not a finite number")
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and (value >= high if high_open else value > high)):
            raise argparse.ArgumentTypeError(f"{quote(text)} is out of range: give {rule}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = bounded(int, 1)
non_negative_int = bounded(int, 0)
finite = bounded(float)
positive = bounded(float, 0, low_open=True)
non_negative = bounded(float, 0)
fraction = bounded(float, 0, 1)


def device_name(text: str) -> str:
    """An argparse `type`: auto, cpu, cuda or cuda:<index> of a GPU this machine has."""
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{quote(text)} is no device of this machine: {problem}")
    return text


def device_names(text: str) -> str:
    """An argparse `type`: one device, or GPUs listed as cuda:0,cuda:2, each one this machine has."""
    for name in text.split(","):
        device_name(name.strip())
    return text


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def byte_size(text: str) -> int:
    """An argparse `type`: a size such as 5GB, 500MB, 1.5GiB or a number of bytes -> bytes (> 0)."""
    match = _SIZE.match(text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a size: give e.g. 5GB, 500MB or 1.5GiB")
    power = "KMGT".index(match[2].upper()) + 1 if match[2] else 0
    return int(float(match[1]) * (1024 if match[3] else 1000) ** power)


def _add_model_folders(g) -> None:
    """The speech models' flags, shared by the scorer and the rewards."""
    g.add_argument("--whisper", help="local Whisper folder (WhisperForConditionalGeneration) for WER/CER")
    g.add_argument("--wavlm", help="local WavLMForXVector folder for speaker similarity (the scorer: a second one, "
                                   "sim_wavlm; the sim reward: instead of resemblyzer's encoder)")
    g.add_argument("--language", default="ar", help="Whisper decoding language")
    g.add_argument("--score-device", type=device_name, default="cpu", help="device for the metric models")


def add_scorer_args(p: argparse.ArgumentParser) -> None:
    """The scorer's command-line flags."""
    g = p.add_argument_group("metrics (all offline)")
    _add_model_folders(g)
    g.add_argument("--no-resemblyzer", action="store_true", help="skip resemblyzer speaker similarity (sim)")
    g.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    g.add_argument("--no-mcd", action="store_true", help="skip mel-cepstral distortion")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """Sampling flags (`launch/generate.py`, `prepare_data preferences`), defaulting to `GenerationConfig()`."""
    from higgs_ds.inference.config import GenerationConfig

    g = p.add_argument_group("decoding (defaults: Higgs Audio v2 inference defaults)")
    d = GenerationConfig()
    g.add_argument("--max-new-frames", type=positive_int, default=d.max_new_frames, help="25 frames = 1 s")
    g.add_argument("--temperature", type=non_negative, default=d.temperature, help="0 = greedy")
    g.add_argument("--top-k", type=non_negative_int, default=d.top_k, help="0 = off")
    g.add_argument("--top-p", type=bounded(float, 0, 1, low_open=True), default=d.top_p, help="1 = off")
    g.add_argument("--ras-window", type=non_negative_int, default=d.ras_window,
                   help="0 = no repetition-aware sampling")
    g.add_argument("--ras-max-repeats", type=positive_int, default=d.ras_max_repeats)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--greedy", action="store_true", help="temperature 0 and no RAS: deterministic")


def generation_config(a: argparse.Namespace):
    """The `GenerationConfig` of `add_decoding_args`' flags; a bad combination is a ConfigError naming its flag."""
    from higgs_ds.inference.config import GenerationConfig

    try:
        return GenerationConfig(max_new_frames=a.max_new_frames, temperature=0.0 if a.greedy else a.temperature,
                                top_k=a.top_k, top_p=a.top_p, ras_window=0 if a.greedy else a.ras_window,
                                ras_max_repeats=a.ras_max_repeats, seed=a.seed)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("GenerationConfig.", "--").replace("_", "-"),
                          fix="see --help") from None


_REWARD_NAME = re.compile(r"^(?:[A-Za-z_]\w*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")


def reward_weights(text: str) -> dict[str, float]:
    """An argparse `type`: "cer,sim" or "cer=2,sim=1,pkg.mod:fn=0.5" -> {name: weight} (weight 1 when omitted;
    each > 0, each name once). Whether a name is a built-in or an importable plug-in is checked after parsing
    (`higgs_ds.rewards.check_rewards`)."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, has_weight, weight = item.partition("=")
        name = name.strip()
        if not _REWARD_NAME.match(name):
            raise argparse.ArgumentTypeError(f"{quote(item)} is not a reward: give name[=weight], the name a "
                                             "built-in (cer, sim, dnsmos, duration, stop) or package.module:function")
        if name in weights:
            raise argparse.ArgumentTypeError(f"reward {name} is given twice")
        weights[name] = positive(weight) if has_weight else 1.0
    return weights


def add_reward_args(p: argparse.ArgumentParser, with_model_folders: bool = True) -> None:
    """The reward models' flags (the scorer's, when the command has them already) and the duration rate."""
    g = p.add_argument_group("reward models (all offline)")
    if with_model_folders:
        _add_model_folders(g)
    g.add_argument("--chars-per-second", type=positive,
                   help="speaking rate for the duration reward (default: the one the run saved, "
                        "reward_rates.json)")


def reward_context(a: argparse.Namespace, chars_per_second: float | None) -> dict:
    """The context the rewards are built with, from the flags of `add_reward_args`."""
    context = {"device": a.score_device, "whisper": a.whisper, "wavlm": a.wavlm, "language": a.language}
    return context | ({"chars_per_second": chars_per_second} if chars_per_second is not None else {})


def scorer_config(a: argparse.Namespace) -> ScorerConfig:
    """The scorer the flags ask for; a model folder without config.json is a ConfigError naming its flag
    (raised before any metric model is loaded)."""
    for flag, folder in (("--whisper", a.whisper), ("--wavlm", a.wavlm)):
        if folder is not None and not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"{folder} is not a local model folder (no config.json)", where=flag,
                              fix="copy the model there first; nothing is downloaded")
    return ScorerConfig(resemblyzer=not a.no_resemblyzer, dnsmos=not a.no_dnsmos, mcd=not a.no_mcd,
                        whisper=a.whisper, wavlm=a.wavlm, language=a.language, device=a.score_device)
