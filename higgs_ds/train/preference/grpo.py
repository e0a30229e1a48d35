"""GRPO's arithmetic (Shao et al., 2024), with Dr. GRPO's switches (Liu et al., 2025): group-normalised
advantages, the clipped policy-gradient term and the k3 KL to the reference, per free cell. Plain tensor
functions; the step that samples and calls them is `higgs_ds.train.preference.objective`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from higgs_ds.train.preference.config import GrpoConfig
from higgs_ds.train.preference.logprobs import CellLogprobs

STD_EPS = 1e-4  # keeps a group of equal rewards at advantage 0 instead of 0/0


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True) -> torch.Tensor:
    """rewards [P*G] (prompt-major groups) -> A_i = (r_i - mean_group) / (std_group + eps), or without the
    std division (Dr. GRPO). std is the sample standard deviation (n-1), as TRL's GRPO."""
    r = rewards.view(-1, group_size).double()
    centred = r - r.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (r.std(dim=1, keepdim=True) + STD_EPS)
    return centred.view(-1).to(rewards.dtype)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per cell: pi_ref/pi - log(pi_ref/pi) - 1 (Schulman's k3: non-negative, unbiased for KL(pi || pi_ref))."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass
class GrpoTerms:
    loss_sum: torch.Tensor  # summed over samples (normalise by the global sample count)
    kl: torch.Tensor  # mean k3 over free cells (detached)
    clip_fraction: torch.Tensor  # share of free cells where the clipped term was the one taken
    cells: torch.Tensor  # free cells


def grpo_loss(cells: CellLogprobs, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              cfg: GrpoConfig) -> GrpoTerms:
    """Per free cell: -min(rho A, clip(rho, 1-eps, 1+eps) A) + beta k3; per sample: the mean over its cells
    (`length_normalize`) or the sum over max_new_frames x K (Dr. GRPO's constant); summed over samples."""
    mask = cells.mask
    a = advantages[cells.sample].unsqueeze(-1).to(cells.logp.dtype)  # [N, 1]: the sample's advantage
    ratio = torch.exp(cells.logp - old_logp)
    unclipped, clipped = ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a
    per_cell = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_cell)
    if ref_logp is not None and cfg.kl_beta:
        kl = k3_kl(cells.logp, ref_logp) * mask
        per_cell = per_cell + cfg.kl_beta * kl
    per_sample = cells.per_sample(per_cell)
    counts = cells.counts()
    if cfg.length_normalize:
        per_sample = per_sample / counts.clamp(min=1)
    else:
        per_sample = per_sample / (cfg.max_new_frames * mask.shape[-1])
    n = mask.sum().clamp(min=1)
    took_clip = (clipped < unclipped) & mask
    return GrpoTerms(per_sample.sum(), (kl.detach().sum() / n), took_clip.sum() / n, mask.sum())
