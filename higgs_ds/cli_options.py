"""Command-line options shared by the launch scripts, kept out of the library modules they configure.

- `add_scorer_args` / `scorer_config`: the offline metrics' flags (`launch/evaluate.py`,
  `launch/generate.py --score`) and the `ScorerConfig` they ask for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from higgs_ds.errors import ConfigError
from higgs_ds.quality.scorer import ScorerConfig


def add_scorer_args(p: argparse.ArgumentParser) -> None:
    """The scorer's command-line flags."""
    g = p.add_argument_group("metrics (all offline)")
    g.add_argument("--whisper", help="local Whisper folder (WhisperForConditionalGeneration) for WER/CER")
    g.add_argument("--wavlm", help="local WavLMForXVector folder for a second speaker similarity (sim_wavlm)")
    g.add_argument("--language", default="ar", help="Whisper decoding language")
    g.add_argument("--no-resemblyzer", action="store_true", help="skip resemblyzer speaker similarity (sim)")
    g.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    g.add_argument("--no-mcd", action="store_true", help="skip mel-cepstral distortion")
    g.add_argument("--score-device", default="cpu", help="device for the metric models")


def scorer_config(a: argparse.Namespace) -> ScorerConfig:
    """The scorer the flags ask for; a model folder without config.json is a ConfigError naming its flag
    (raised before any metric model is loaded)."""
    for flag, folder in (("--whisper", a.whisper), ("--wavlm", a.wavlm)):
        if folder is not None and not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"{folder} is not a local model folder (no config.json)", where=flag,
                              fix="copy the model there first; nothing is downloaded")
    return ScorerConfig(resemblyzer=not a.no_resemblyzer, dnsmos=not a.no_dnsmos, mcd=not a.no_mcd,
                        whisper=a.whisper, wavlm=a.wavlm, language=a.language, device=a.score_device)
