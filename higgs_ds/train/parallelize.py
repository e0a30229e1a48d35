"""Everything ZeRO does to the model, applied from outside it: build under `zero.Init`, mark leaf modules
for the fused kernels, and fill weights (fresh init or a checkpoint) one gathered parameter at a time.

The ZeRO-3 rules the rest of the code keeps (see docs/architecture.md): every rank calls every module in the
same order each step, with empty tensors rather than skipped calls; parameters are only touched inside
`GatheredParameters`, filled by rank 0 and re-partitioned on exit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils import set_z3_leaf_modules

from higgs_ds import comm, ops
from higgs_ds.device import resolve_device
from higgs_ds.models import ModelFamily
from higgs_ds.models.pretrained import checkpoint_state_dict

log = logging.getLogger(__name__)


def is_zero3(ds_config: dict) -> bool:
    return ds_config.get("zero_optimization", {}).get("stage", 0) == 3


def build_model_sharded(family: ModelFamily, model_cfg, ds_config: dict, init: str | Path | None = None):
    """Construct under `zero.Init` for ZeRO-3 (no rank ever holds the whole model), then fill the weights
    from `init` (any supported checkpoint layout) or a fresh initialisation."""
    zero3 = is_zero3(ds_config)
    if zero3:
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = family.build_model(model_cfg)
        leaves = family.zero3_leaf_modules(ops.uses_triton(resolve_device()))  # modules a fused kernel reads whole
        if leaves:
            set_z3_leaf_modules(model, leaves)
    else:
        dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
        model = family.build_model(model_cfg, dtype)
    if init is None:
        for module in model.modules():  # gather, initialise on rank 0, re-partition
            with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=0,
                                                   enabled=zero3):
                model.init_module(module)
    else:
        log.info("initialised from %s (%s layout)", init, load_checkpoint_sharded(model, init))
    return model


def load_checkpoint_sharded(model, directory: str | Path) -> str:
    """Copy a checkpoint into a (possibly ZeRO-3-partitioned) model; returns the layout. Only rank 0 reads
    tensor data; the other ranks read names and shapes, so a node reads a 5.8B checkpoint once."""
    params = dict(model.named_parameters())
    zero3 = any(hasattr(p, "ds_id") for p in params.values())
    shapes = {n: tuple(p.ds_shape) if zero3 else tuple(p.shape) for n, p in params.items()}
    filler = not zero3 or comm.rank() == 0
    sd, layout = checkpoint_state_dict(directory, model.config, shapes, meta=not filler)
    for name, t in sd.items():
        with deepspeed.zero.GatheredParameters([params[name]], modifier_rank=0, enabled=zero3), torch.no_grad():
            if filler:
                params[name].copy_(t)
    return layout
