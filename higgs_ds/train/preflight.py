"""What a training run can be refused for before it costs anything: checked on every rank before the
process group starts, so bad input ends in one `error:` line instead of a rendezvous, a model build and
a traceback per rank. Each check reads only the file system and the typed config."""

from __future__ import annotations

import json
import os
from pathlib import Path

from higgs_ds.errors import CheckpointError, ConfigError, DataError, UserError
from higgs_ds.models import get_family
from higgs_ds.run_dir import COMPLETE
from higgs_ds.train.build import check_data_matches_model, data_audio_spec, load_tokenizer, model_config
from higgs_ds.train.checkpointing import choose_resume_tag
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.ds_config import build_ds_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


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
        data_audio_spec(cfg)  # the splits' specs agree with each other and with loss.codebook_weights
    except UserError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(str(exc), where=f"data.shards={cfg.data.shards}") from None
    check_model_family(cfg)
    check_writable(Path(cfg.run_dir), "run_dir")
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    tag = choose_resume_tag(ckpt_dir, cfg.resume, warn=False)
    world = launcher_world_size()
    saved_world = json.loads((ckpt_dir / tag / COMPLETE).read_text()).get("world_size") if tag else None
    if saved_world not in (None, world):
        raise CheckpointError(f"checkpoint {tag} was written by {saved_world} ranks, this run has {world}",
                              where=f"resume={cfg.resume}", fix=f"launch with {saved_world} ranks: exact data "
                                                                 f"resumption needs the same number")


def check_model_family(cfg: TrainConfig) -> None:
    """`model.arch`, `model.init` and the tokenizer are of one family, the shards' codes are what the model
    embeds, and the LoRA groups exist in the family. Reads config.json and the tokenizer, no weights."""
    family = get_family(cfg.model.arch)
    tokenizer = load_tokenizer(cfg.data.tokenizer, family)
    spec = data_audio_spec(cfg)
    try:
        check_data_matches_model(cfg, model_config(cfg, family, tokenizer, spec), spec)
    except UserError:
        raise
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(str(exc), where=f"model.init={cfg.model.init}" if cfg.model.init else "model") from None
    if cfg.lora.enabled:
        cfg.lora.groups(family)


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
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{existing} is a file, not a folder", where=f"{key}={folder}",
                          fix="choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing} is not writable", where=f"{key}={folder}", fix="choose a folder you can write")
