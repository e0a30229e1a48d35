"""A finite, unshuffled pass over a (small) held-out split, planned identically on every rank."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import torch

from higgs_ds.data.loader import LoaderConfig
from higgs_ds.data.renderer import MakeRenderer
from higgs_ds.data.shards import list_shards, load_spec
from higgs_ds.data.stream import WorkerStream, bucket_batches

log = logging.getLogger(__name__)


def build_eval_batches(cfg: LoaderConfig, tokenizer, make_renderer: MakeRenderer, rank: int = 0,
                       world_size: int = 1) -> list[dict[str, torch.Tensor]]:
    """A finite, unshuffled pass over a (small) eval split for one rank.

    Every rank plans the same global batch list from the whole split and takes batches
    ``rank::world_size``. Ranks that come up short get copies of their first batch with every label
    set to -100, so all ranks run the same number of forwards (ZeRO-3 needs lockstep) while the
    copies add nothing to loss sums or token counts."""
    spec = load_spec(cfg.shards)
    stream = WorkerStream(replace(cfg.stream, shuffle_buffer=1), spec, list_shards(cfg.shards), tokenizer,
                          make_renderer, rank=0, world_size=1, worker=0, num_workers=1)
    samples = list(stream.rendered_samples(epoch=0))
    skipped = {kind: n for kind, n in stream.counters.take().items() if n}
    if skipped:
        log.warning("eval split %s: %s (see the warnings above)", cfg.shards,
                    ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in skipped.items()))
    if len(samples) < world_size:
        raise ValueError(f"{cfg.shards}: {len(samples)} eval samples cannot feed {world_size} ranks")
    # floor, not ceil: ceil(n / floor(n / world)) >= world batches, so no rank is left without one.
    plan_cfg = replace(stream.cfg, max_batch_size=min(stream.cfg.max_batch_size, len(samples) // world_size))
    planned = bucket_batches(samples, plan_cfg, random.Random(f"{cfg.stream.seed}:eval"))
    mine = [stream.collate(samples) for samples in planned[rank::world_size]]
    per_rank = -(-len(planned) // world_size)
    while len(mine) < per_rank:
        filler = {k: v.clone() for k, v in mine[0].items()}
        filler["labels"].fill_(-100)
        filler["audio_labels"].fill_(-100)
        mine.append(filler)
    return mine
