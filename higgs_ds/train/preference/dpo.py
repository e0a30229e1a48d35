"""The DPO loss (Rafailov et al., 2023) with cDPO label smoothing, IPO (Azar et al., 2023) and length
normalisation, on sequence log-probabilities over free cells (`logprobs`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from higgs_ds.train.preference.config import DpoConfig


@dataclass
class DpoTerms:
    """Per pair [B]: the loss and what is logged."""

    loss: torch.Tensor
    chosen_reward: torch.Tensor  # beta * (log pi - log pi_ref) of the chosen sample (detached)
    rejected_reward: torch.Tensor


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, cfg: DpoConfig, chosen_cells: torch.Tensor | None = None,
             rejected_cells: torch.Tensor | None = None) -> DpoTerms:
    """Log-probabilities [B] of each pair's samples under the policy and the reference. With
    `cfg.length_normalize` each is divided by its sample's scored cells (`*_cells` [B])."""
    if cfg.length_normalize:
        chosen_n, rejected_n = chosen_cells.clamp(min=1), rejected_cells.clamp(min=1)
        policy_chosen, ref_chosen = policy_chosen / chosen_n, ref_chosen / chosen_n
        policy_rejected, ref_rejected = policy_rejected / rejected_n, ref_rejected / rejected_n
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen - rejected
    if cfg.ipo:
        loss = (h - 1 / (2 * cfg.beta)) ** 2
    else:
        eps = cfg.label_smoothing
        loss = -(1 - eps) * F.logsigmoid(cfg.beta * h) - eps * F.logsigmoid(-cfg.beta * h)
    return DpoTerms(loss, cfg.beta * chosen.detach(), cfg.beta * rejected.detach())
