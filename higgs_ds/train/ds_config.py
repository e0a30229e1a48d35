"""The DeepSpeed JSON of a run: the file's own settings (ZeRO stage, offload, buckets) plus its "auto"
fields filled from the training config, so batch sizes and precision have one source of truth."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from higgs_ds.device import resolve_precision
from higgs_ds.train.config import TrainConfig


def build_ds_config(path: str | Path, cfg: TrainConfig, world_size: int) -> dict:
    """Load a DeepSpeed JSON and fill its "auto" fields from the training config (one source of truth)."""
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
    return ds
