"""2-rank ZeRO-3 worker: rank 0 trains on text-only micro-batches while rank 1 has audio.
Usage: zero3_mixed_batch_worker.py OUT_DIR OPS_BACKEND. Writes per-step losses to OUT_DIR/rank{r}.json.
With OPS_BACKEND=triton (and TRITON_INTERPRET=1 on CPU) the fused kernels run inside ZeRO-3 steps."""

import json
import os
import sys
from pathlib import Path

if sys.argv[-1] == "triton":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import deepspeed
import torch

from higgs_ds import ops
from higgs_ds.models import get_family
from higgs_ds.models.loss import LossWeights, combine
from higgs_ds.train.distributed import init_distributed
from higgs_ds.train.parallelize import build_model_sharded
from tests.model_utils import random_batch

out_dir, backend = Path(sys.argv[-2]), sys.argv[-1]  # the launcher puts --local_rank first
ops.set_backend(backend)
rank, world = init_distributed(timeout_s=120)
torch.manual_seed(0)
ds_config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 2 * world,
             "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
             "data_types": {"grad_accum_dtype": "fp32"}, "bf16": {"enabled": False}}
family = get_family("higgs_v2_dualffn")  # the DualFFN layers: the fused routed-FFN path under test
model = build_model_sharded(family, family.tiny_config(), ds_config)
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                                  config=ds_config)
cfg = model.config
segments = [[], []] if rank == 0 else [[(2, 6, "in"), (10, 8, "out")], [(3, 9, "out")]]
losses = []
for step in range(3):
    b = random_batch(cfg, segments, seq_len=20, seed=step)
    out = engine(b["input_ids"], b["audio_ids"], b["attention_mask"], labels=b["labels"],
                 audio_labels=b["audio_labels"])
    parts = combine(out.loss_sums, LossWeights())
    engine.backward(parts.loss)
    engine.step()
    losses.append({"loss": parts.loss.item(), "audio": parts.audio.item(), "n_audio": b["audio_ids"].shape[0],
                   "grad_norm": float(engine.get_global_grad_norm())})
(out_dir / f"rank{rank}.json").write_text(json.dumps(losses))
