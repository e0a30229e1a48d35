"""The DeepSpeed JSON of a run: the file's own settings (ZeRO stage, offload, buckets) plus its "auto"
fields filled from the training config, so batch sizes and precision have one source of truth."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from higgs_ds.device import resolve_precision
from higgs_ds.train import distributed
from higgs_ds.train.config import TrainConfig


def build_ds_config(path: str | Path, cfg: TrainConfig, world_size: int, local_world_size: int | None = None) -> dict:
    """Load a DeepSpeed JSON and fill its "auto" fields from the training config (one source of truth) and,
    for ZeRO++'s `zero_hpz_partition_size`, from the ranks per node (default: what the launcher says)."""
    ds = copy.deepcopy(json.loads(Path(path).read_text()))
    micro = cfg.data.stream.max_batch_size  # nominal: batches are built to a token budget
    filled = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise ValueError(f"{path}: {key}={ds[key]} conflicts with the training config ({value}); "
                             f"set it to \"auto\" and change the recipe instead")
        ds[key] = value
    ds["train_batch_size"] = micro * cfg.grad_accum * world_size
    ds.setdefault("bf16", {})["enabled"] = resolve_precision(cfg.precision) == "bf16"
    zero = ds.get("zero_optimization", {})
    if zero.get("zero_hpz_partition_size") == "auto":
        local = local_world_size if local_world_size is not None else distributed.local_world_size()
        zero["zero_hpz_partition_size"] = hpz_partition_size(world_size, local, path)
    return ds


def zeropp_summary(ds: dict) -> str:
    """" with ZeRO++ (...)" naming what of it the config turns on, for the start-up line; "" without it."""
    zero = ds.get("zero_optimization", {})
    hpz = zero.get("zero_hpz_partition_size", 1)
    parts = [f"hierarchical partition {hpz}" if hpz > 1 else "",
             "int8 weights" if zero.get("zero_quantized_weights") else "",
             "int4 gradients" if zero.get("zero_quantized_gradients") else ""]
    parts = [part for part in parts if part]
    return f" with ZeRO++ ({', '.join(parts)})" if parts else ""


def hpz_partition_size(world_size: int, local_world_size: int, path: str | Path = "the DeepSpeed JSON") -> int:
    """ZeRO++ hierarchical partitioning keeps a secondary copy of the weights within each node, so the
    backward all-gather never leaves it: the partition is one node's ranks. On one node there is nothing
    to save (the copy would only cost memory): 1, i.e. off."""
    if world_size <= local_world_size:
        return 1
    if world_size % local_world_size:
        raise ValueError(f"{path}: zero_hpz_partition_size=auto needs the same number of ranks on every node; "
                         f"world size {world_size} is not a multiple of {local_world_size} ranks per node")
    return local_world_size
