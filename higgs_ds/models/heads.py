"""Heads with a fused loss, shared by the families: a linear head that computes its cross-entropy without
materialising the logits, and the "no text head" of families that train no text."""

from __future__ import annotations

import torch
from torch import nn

from higgs_ds import ops


class LinearWithLoss(nn.Linear):
    """A bias-free head whose forward can also compute its loss without materialising all logits.

    `forward(h)` gives logits. `forward(h, targets)` gives the fused head + cross-entropy sums from
    `higgs_ds.ops`. Going through this module's own forward keeps ZeRO-3's parameter gathering.
    """

    def __init__(self, in_features: int, out_features: int, num_codebooks: int = 0):
        super().__init__(in_features, out_features, bias=False)
        self.num_codebooks = num_codebooks  # >0: an audio head with codebook-major rows

    def forward(self, hidden, targets=None):
        if targets is None:
            logits = super().forward(hidden)
            if self.num_codebooks:
                logits = logits.view(*hidden.shape[:-1], self.num_codebooks, self.out_features // self.num_codebooks)
            return logits
        if self.num_codebooks:
            return ops.codebook_linear_cross_entropy(hidden, self.weight, targets)
        return ops.linear_cross_entropy(hidden, self.weight, targets)


def no_text_head(hidden: torch.Tensor, targets: torch.Tensor):
    """A family that trains no text: zero sums that keep the graph; any text target is a data error."""
    if targets.numel():
        raise ValueError(f"{targets.numel()} text labels reached a model without a text head (render its "
                         f"samples with its family's renderer: every text label is -100)")
    zero = hidden.float().sum() * 0.0
    return zero, zero.detach(), zero.detach()


def no_text_logits(hidden: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Text logits of a model without a text head: only empty rows (e.g. a prediction report's) come here."""
    if hidden.numel():
        raise NotImplementedError("this model has no text head")
    return hidden.new_zeros((*hidden.shape[:-1], vocab_size))
