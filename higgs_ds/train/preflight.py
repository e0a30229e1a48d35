"""What a training run can be refused for before it costs anything: checked on every rank before the
process group starts, so bad input ends in one `error:` line instead of a rendezvous, a model build and
a traceback per rank. Each check reads only the file system and the typed config."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tarfile
from pathlib import Path

import torch

from higgs_ds.data.shards import is_pair_split, load_index
from higgs_ds.errors import CheckpointError, ConfigError, DataError, UserError, process_rank
from higgs_ds.models import ModelFamily, get_family
from higgs_ds.rewards import check_rewards
from higgs_ds.run_dir import COMPLETE, RunCheckpoint
from higgs_ds.train.build import check_data_matches_model, data_audio_spec, load_tokenizer, model_config
from higgs_ds.train.checkpointing import choose_resume_tag
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.ds_config import build_ds_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
log = logging.getLogger(__name__)


def launcher_world_size() -> int:
    """The number of ranks as the launcher set it, before the process group exists: the DeepSpeed
    launcher and torchrun export WORLD_SIZE, srun only SLURM_NTASKS (mapped later by `export_slurm_env`)."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1")


def check_training_inputs(cfg: TrainConfig, ds_json: str) -> None:
    """Raise a UserError naming the first input the run cannot use."""
    check_deepspeed_json(ds_json, cfg)
    check_tokenizer(cfg.data.tokenizer, "data.tokenizer")
    for key, split in (("data.shards", cfg.data.shards), ("data.eval_shards", cfg.data.eval_shards),
                       ("audio_eval.shards", cfg.audio_eval.shards)):
        if split is not None and not (Path(split) / "shards.json").is_file():
            raise DataError(f"{Path(split) / 'shards.json'} not found", where=f"{key}={split}",
                            fix="point it at a folder built by `python launch/prepare_data.py build` (or demo)")
    try:
        spec = data_audio_spec(cfg)  # the splits' specs agree with each other and with loss.codebook_weights
    except UserError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(str(exc), where=f"data.shards={cfg.data.shards}") from None
    if cfg.objective == "grpo":  # every reward's package or model folder is there (files only, no model loaded)
        check_rewards(cfg.rewards, dict(cfg.grpo.reward_models))
    world = launcher_world_size()
    check_enough_samples(cfg, world)
    if cfg.objective == "dpo":
        check_pair_split(cfg.data.shards)
    family, model_cfg = check_model_family(cfg, spec)
    shapes = parameter_shapes(family, model_cfg)
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    check_writable(Path(cfg.run_dir), "run_dir")
    check_writable(ckpt_dir, "run_dir")
    tag = choose_resume_tag(ckpt_dir, cfg.resume, warn=False)
    if tag:
        check_resume_tag(ckpt_dir / tag, cfg, world, family, shapes)
    warn_if_short_of_space(ckpt_dir, shapes)


def check_enough_samples(cfg: TrainConfig, world: int) -> None:
    """Every data slot (rank x loader worker) of the training split gets samples; an eval split feeds every
    rank. A split of 0 samples (an empty manifest's build) is refused here, not as a peer's lost connection."""
    slots = world * max(1, cfg.data.num_workers)
    for key, split, need in (("data.shards", cfg.data.shards, slots), ("data.eval_shards", cfg.data.eval_shards,
                                                                      world if cfg.eval_every else 0)):
        if split is None:
            continue
        count = int(json.loads((Path(split) / "shards.json").read_text()).get("num_samples", 0))
        if count == 0 or count < need:
            raise DataError(f"{split} holds {count} samples; this run needs at least {need} ({world} ranks"
                            f"{f' x {max(1, cfg.data.num_workers)} loader workers' if need == slots else ''})",
                            where=f"{key}={split}", fix="build more data, or use fewer ranks or data.num_workers")


def check_pair_split(split: str) -> None:
    """objective=dpo trains on pairs (`codes` chosen, `rejected_codes` rejected): an ordinary build would have
    every sample refused by the loader, and the run end with an epoch that gave no batch."""
    try:
        pairs = is_pair_split(split, load_index(split))
    except (OSError, KeyError, tarfile.TarError) as exc:
        raise DataError(f"cannot read the first shard of {split} ({exc})", where=f"data.shards={split}",
                        fix="rebuild the split") from None
    if not pairs:
        raise DataError(f"{split} holds no preference pairs (its samples have no rejected_codes): objective=dpo "
                        "trains on chosen/rejected pairs", where=f"data.shards={split}",
                        fix="build pairs with `python launch/prepare_data.py preferences --from RUN --manifest M "
                            "--out DIR` and set data.shards=DIR (or train with objective=sft or grpo)")


def check_resume_tag(tag_dir: Path, cfg: TrainConfig, world: int, family: ModelFamily,
                     wanted: dict[str, tuple[int, ...]]) -> None:
    """The checkpoint to resume was written by as many ranks, for the same family and model shape."""
    saved_world = json.loads((tag_dir / COMPLETE).read_text()).get("world_size")
    if saved_world not in (None, world):
        raise CheckpointError(f"checkpoint {tag_dir.name} was written by {saved_world} ranks, this run has {world}",
                              where=f"resume={cfg.resume}", fix=f"launch with {saved_world} ranks: exact data "
                                                                 f"resumption needs the same number")
    run = RunCheckpoint(tag_dir.parent, tag_dir.name, json.loads((tag_dir / "config.json").read_text()))
    if run.family.name != family.name:
        raise CheckpointError(f"checkpoint {tag_dir.name} is a {run.family.name} run, model.arch={family.name}",
                              where=f"resume={cfg.resume}",
                              fix="resume with the run's model.arch, or use a new run_dir")
    saved = parameter_shapes(family, run.model_config)
    differ = sorted(n for n in saved.keys() | wanted.keys() if saved.get(n) != wanted.get(n))
    if differ:
        shown = ", ".join(f"{n} {saved.get(n)} -> {wanted.get(n)}" for n in differ[:3])
        raise CheckpointError(f"checkpoint {tag_dir.name} holds another model shape than this run's settings "
                              f"({len(differ)} tensors differ: {shown})", where=f"resume={cfg.resume}",
                              fix="resume with the model settings the run started with, or use a new run_dir")


def parameter_shapes(family: ModelFamily, model_cfg) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, from a model built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return {n: tuple(p.shape) for n, p in family.build_model(model_cfg).named_parameters()}


# Bytes per parameter of a ZeRO checkpoint: fp32 master weights and two Adam moments, plus the weights.
CHECKPOINT_BYTES_PER_PARAMETER = 16


def warn_if_short_of_space(ckpt_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A warning (rank 0) when the disk cannot hold a new checkpoint next to the one it replaces."""
    need = 2 * CHECKPOINT_BYTES_PER_PARAMETER * sum(math.prod(s) for s in shapes.values())
    free = shutil.disk_usage(_existing(ckpt_dir)).free
    if free < need and process_rank() == 0:
        log.warning("warning: %s has %.1f GB free; a checkpoint of this model needs about %.1f GB while the "
                    "previous one is kept: saves may fail (the run keeps its last complete checkpoint)",
                    ckpt_dir, free / 1e9, need / 1e9)


def check_model_family(cfg: TrainConfig, spec) -> tuple[ModelFamily, object]:
    """`model.arch`, `model.init` and the tokenizer are of one family, the shards' codes (`spec`) are what the
    model embeds, and the LoRA groups exist in the family. Reads config.json and the tokenizer, no weights."""
    family = get_family(cfg.model.arch)
    tokenizer = load_tokenizer(cfg.data.tokenizer, family)
    try:
        model_cfg = model_config(cfg, family, tokenizer, spec)
        check_data_matches_model(cfg, model_cfg, spec)
    except UserError:
        raise
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(str(exc), where=f"model.init={cfg.model.init}" if cfg.model.init else "model") from None
    if cfg.lora.enabled:
        cfg.lora.groups(family)
    return family, model_cfg


def check_deepspeed_json(path: str, cfg: TrainConfig) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"DeepSpeed config {path} not found", where="--deepspeed",
                          fix="pass a JSON from ds_configs/, e.g. --deepspeed ds_configs/zero3.json")
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"DeepSpeed config {path} is not JSON ({exc})", where="--deepspeed",
                          fix="fix the file or start from ds_configs/zero3.json") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"DeepSpeed config {path} is not a JSON object", where="--deepspeed",
                          fix="start from ds_configs/zero3.json")
    try:
        build_ds_config(path, cfg, launcher_world_size())
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(str(exc), where="--deepspeed") from None


def check_tokenizer(path: str, key: str) -> None:
    """A local tokenizer folder: a missing one must not reach the hub client's "repo id" message."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {path} not found", where=f"{key}={path}",
                          fix="give a local folder with tokenizer.json (the demo's is data/demo/tokenizer)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{path} holds no {' or '.join(TOKENIZER_FILES)}", where=f"{key}={path}",
                          fix="give the folder a transformers tokenizer was saved to")


def check_writable(folder: Path, key: str) -> None:
    """`folder` exists and is writable, or can be created: its nearest existing parent is writable."""
    existing = _existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{existing} is a file, not a folder", where=f"{key}={folder}",
                          fix="choose another folder")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise ConfigError(f"{existing} is on a read-only file system (EROFS)", where=f"{key}={folder}",
                          fix="choose a folder on a writable disk")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing} is not writable", where=f"{key}={folder}", fix="choose a folder you can write")


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
