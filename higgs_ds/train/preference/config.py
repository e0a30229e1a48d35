"""The config sections of the preference objectives: `dpo:` and `grpo:` (the `rewards:` weights and the
`reference:` folder sit at the top level of `TrainConfig`). Defaults follow the papers' usual settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DpoConfig:
    """DPO (Rafailov et al., 2023) on pair shards (`prepare_data preferences`): `codes` chosen, `rejected_codes`."""

    beta: float = 0.1  # strength of the implicit KL to the reference
    label_smoothing: float = 0.0  # cDPO: the share of pairs assumed mislabelled, in [0, 0.5)
    ipo: bool = False  # IPO's squared loss (h - 1/(2 beta))^2 instead of the log-sigmoid
    length_normalize: bool = False  # divide each log-prob by its scored cells (SimPO-style)

    def __post_init__(self):
        if not self.beta > 0 or not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"beta={self.beta} must be > 0 and label_smoothing={self.label_smoothing} in [0, 0.5)")
        if self.ipo and self.label_smoothing:
            raise ValueError("ipo and label_smoothing are two different losses: choose one")


@dataclass
class GrpoConfig:
    """GRPO (Shao et al., 2024) with Dr. GRPO's switches (Liu et al., 2025). A cell is one sampled
    (row, codebook) pair: the unit of the ratio, the clip and the KL."""

    group_size: int = 4  # G samples per prompt
    prompts: int = 2  # prompts per rank per step (the first of each loader batch)
    epochs: int = 1  # optimisation passes over one step's samples (1: the ratio is 1, the clip never acts)
    clip_eps: float = 0.2
    kl_beta: float = 0.04  # weight of the per-cell k3 KL to the reference; 0: no reference forward
    scale_by_std: bool = True  # divide advantages by the group's std (Dr. GRPO: false)
    length_normalize: bool = True  # average a sample's cells before the batch mean (Dr. GRPO: false)
    temperature: float = 1.0  # sampling; log-probs use the same temperature, so pi_old is the sampler
    top_k: int | None = None  # None: off (then the sampler is exactly pi_old)
    top_p: float | None = None
    max_new_frames: int = 200  # delay-pattern columns per sample (25 per second of audio)
    # the reward models' folders where a built-in needs one: {whisper: DIR} for cer, {wavlm: DIR} for sim
    reward_models: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: group-normalised advantages need >= 2 samples")
        if self.prompts < 1 or self.epochs < 1 or self.max_new_frames < 1:
            raise ValueError("prompts, epochs and max_new_frames must be >= 1")
        if not 0 < self.clip_eps < 1 or self.kl_beta < 0 or not self.temperature > 0:
            raise ValueError(f"clip_eps={self.clip_eps} must be in (0, 1), kl_beta >= 0, temperature > 0")
