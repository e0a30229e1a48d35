"""Sampling several candidates of a prompt and ranking them by reward: what best-of-N generation
(`launch/generate.py --candidates N --select ...`) and preference pairs (`prepare_data preferences`) share.

    sampler = load_sampler("runs/demo", device="cpu")
    result = sampler.sample([TTSRequest(text)] * 4, GenerationConfig(seed=7))     # 4 candidates, one call
    scored = rewards.score(sampler.reward_samples(result.codes, result.finished, [text] * 4, rewards.needs_audio))
    best, worst = rank(scored.total)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import AudioCodec, load_codec_for_spec
from higgs_ds.data.renderer import Renderer
from higgs_ds.data.schema import PromptConfig
from higgs_ds.errors import CheckpointError, ConfigError
from higgs_ds.inference import GenerationConfig, GenerationResult, TTSRequest, generate, load_model
from higgs_ds.rewards.base import RewardResult, RewardSample
from higgs_ds.rewards.speech import make_samples


@dataclass
class Sampler:
    """A loaded checkpoint ready to generate: model, its family's renderer, its prompt layout, its codec."""

    model: nn.Module
    renderer: Renderer
    prompt: PromptConfig
    codec: AudioCodec
    spec: AudioSpec

    def sample(self, requests: list[TTSRequest], cfg: GenerationConfig) -> GenerationResult:
        """One batched generation (no cross-rank sync: each process samples on its own)."""
        return generate(self.model, self.renderer, requests, cfg, self.prompt, sync_ranks=False)

    def reward_samples(self, codes: list[torch.Tensor], finished: list[bool], texts: list[str], needs_audio: bool,
                       reference_codes: list | None = None, reference_audio: list | None = None,
                       reference_rate: int | None = None) -> list[RewardSample]:
        """Codes [K, T] -> RewardSamples, audio decoded by the checkpoint's codec when `needs_audio`."""
        return make_samples(codes, texts, finished, spec=self.spec, codec=self.codec,
                            needs_audio=needs_audio, reference_codes=reference_codes,
                            reference_audio=reference_audio, reference_rate=reference_rate)


def load_sampler(checkpoint: str | Path, tag: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, tokenizer_dir: str | Path | None = None,
                 codec_path: str | None = None) -> Sampler:
    """The checkpoint (run, tag or export), its tokenizer (`tokenizer_dir`, else the one it was trained with)
    and the codec its audio spec names (`codec_path`: a local copy when it moved)."""
    from transformers import AutoTokenizer

    loaded = load_model(checkpoint, tag, device=device, dtype=dtype)
    tokenizer_dir = tokenizer_dir or loaded.tokenizer_dir
    if tokenizer_dir is None:
        raise ConfigError(f"no tokenizer found for {checkpoint}", where="--tokenizer",
                          fix="pass --tokenizer DIR (the folder the model was trained with)")
    if loaded.audio_spec is None:
        raise CheckpointError(f"{checkpoint} has no trained audio side (a plain Llama checkpoint)",
                              where="checkpoint", fix="generate from a higgs-ds run or export")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    codec = load_codec_for_spec(loaded.audio_spec, codec_path, str(device), what=f"{checkpoint}'s codes")
    renderer = loaded.family.make_renderer(tokenizer, loaded.model.config.audio_num_codebooks)
    return Sampler(loaded.model, renderer, loaded.prompt, codec, loaded.audio_spec)


def rank(total: np.ndarray, usable: np.ndarray | None = None) -> tuple[int, int]:
    """(best, worst) candidate by weighted reward; the first one wins a tie. `usable`: a mask of the
    candidates that may be picked at all."""
    total = np.asarray(total, dtype=np.float64)
    usable = np.ones(len(total), bool) if usable is None else np.asarray(usable, bool)
    order = [i for i in range(len(total)) if usable[i]]
    if not order:
        raise ValueError("rank: no usable candidate")
    best = max(order, key=lambda i: (total[i], -i))
    worst = min(order, key=lambda i: (total[i], i))
    return best, worst


def scores_of(result: RewardResult, i: int) -> dict[str, float | None]:
    """Candidate i's component scores by reward name (None where the reward left it out)."""
    return {name: None if math.isnan(values[i]) else float(values[i]) for name, values in result.components.items()}
