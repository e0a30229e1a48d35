"""The reference policy of DPO and GRPO.

- Under LoRA: the trained model itself with its adapters switched off (peft's `enable_adapters(False)` on
  every adapted layer, what `PeftModel.disable_adapter()` does): no second copy of the weights.
- Under full fine-tuning: a frozen copy loaded from `reference` (default `model.init`, or the same fresh
  initialisation as the policy), built under `zero.Init` and wrapped in an optimizer-free DeepSpeed engine,
  so it is partitioned like the policy (ZeRO-3: its weights / ranks per rank, no gradients, no moments).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import deepspeed
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from higgs_ds.train.parallelize import build_model_sharded, is_zero3
from higgs_ds.train.preference.logprobs import CellLogprobs, cell_logprobs


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """The model as its base: every LoRA layer's adapters off inside the block, on again after."""
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class ReferencePolicy:
    """`logprobs(batch)`: the reference's cell log-probabilities, without gradients."""

    def __init__(self, policy, frozen=None) -> None:
        self.policy, self.frozen = policy, frozen  # frozen None: the policy with its adapters disabled

    @torch.no_grad()
    def logprobs(self, batch: dict, temperature: float = 1.0) -> CellLogprobs:
        if self.frozen is not None:
            return cell_logprobs(self.frozen, batch, temperature)
        with adapters_disabled(self.policy.module if hasattr(self.policy, "module") else self.policy):
            return cell_logprobs(self.policy, batch, temperature)


def build_reference(cfg, family, model_cfg, ds_config: dict, policy) -> ReferencePolicy:
    """The run's reference policy (see the module docstring). `policy`: the training engine."""
    if cfg.lora.enabled:
        return ReferencePolicy(policy)
    torch.manual_seed(cfg.seed)  # a fresh start: the same initialisation as the policy's
    frozen = build_model_sharded(family, model_cfg, ds_config, cfg.reference or cfg.model.init)
    frozen.requires_grad_(False)
    if is_zero3(ds_config):
        inference = {k: v for k, v in ds_config.items() if k not in ("optimizer", "scheduler")}
        frozen, *_ = deepspeed.initialize(model=frozen, config=inference)
    else:
        frozen = frozen.to(policy.device)
    frozen.eval()
    return ReferencePolicy(policy, frozen)
