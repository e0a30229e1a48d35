"""Consolidate a training run's ZeRO checkpoint into a model folder of its family's layouts: the library
behind `launch/export.py`.

The output is written to a temporary folder beside `out` and renamed into place when complete. `out` may
not be, hold or lie inside the checkpoints it reads, nor lie inside any run's checkpoints/ (the next save's
rotation would delete it, or it would overwrite a tag's files). An existing non-empty `out` is replaced
only when an export wrote it, and only with `overwrite` (`higgs_ds.output_guard`). A LoRA run's adapters
are merged into the full weights, or written alone in peft's format (`adapter_only`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from higgs_ds.errors import CheckpointError, ConfigError
from higgs_ds.models import FAMILY_KEY, ModelFamily
from higgs_ds.models.checkpoint_files import read_config, write_config
from higgs_ds.output_guard import OutputKind, replace_folder
from higgs_ds.run_dir import COMPLETE, PROMPT_FILE, find_run_checkpoint, write_run_extras
from higgs_ds.train.lora import LoraConfig, merged_state_dict, save_adapter

# before markers, an export was a folder with config.json and prompt_config.json (a run has no prompt file)
EXPORT_OUTPUT = OutputKind("export", files=("config.json", PROMPT_FILE), not_files=("checkpoints",))


def check_out(out: Path, ckpt_dir: Path, overwrite: bool) -> None:
    """Refuse an --out that would damage a run or replace anything but an earlier export."""
    read = Path(ckpt_dir) / "checkpoints" if (Path(ckpt_dir) / "checkpoints").is_dir() else Path(ckpt_dir)
    EXPORT_OUTPUT.check(out, inputs=(read,), overwrite=overwrite)
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name == "checkpoints" and ((folder / "latest").exists() or any(folder.glob("step*/" + COMPLETE))):
            raise CheckpointError(f"{out} is inside the run checkpoints folder {folder}", where="--out",
                                  fix="export somewhere else, e.g. --out exported/<name>")
        if (folder / COMPLETE).is_file():
            raise CheckpointError(f"{out} is inside checkpoint tag {folder}", where="--out",
                                  fix="export somewhere else, e.g. --out exported/<name>")


def export(ckpt_dir: Path, out: Path, layout: str | None = None, tag: str | None = None, max_shard_size: str = "5GB",
           adapter_only: bool = False, overwrite: bool = False) -> Path:
    """Write the run's checkpoint `tag` (default: latest) to `out` in `layout` (default: the family's own)."""
    check_out(out, ckpt_dir, overwrite)
    if not Path(ckpt_dir).is_dir():
        raise CheckpointError(f"{ckpt_dir} is not a folder", where="checkpoints", fix="give a run's checkpoints/")
    run = find_run_checkpoint(ckpt_dir, tag)
    if run is None:
        raise CheckpointError(f"no training checkpoint {tag or '(latest)'} in {ckpt_dir}", where="checkpoints",
                              fix="give a run dir or its checkpoints/ folder")
    family = run.family
    layout = check_layout(family, layout)
    lora = LoraConfig.from_run_config(run.meta["train"])  # None: a full fine-tuning run
    if adapter_only and lora is None:
        raise ConfigError(f"{run.path} is not a LoRA run (lora.enabled was false)", where="--adapter-only",
                          fix="drop --adapter-only: there is no adapter to export")
    tokenizer = run.tokenizer_dir
    if tokenizer is None:
        raise CheckpointError(f"the run's tokenizer {run.meta['train']['data']['tokenizer']} is not a directory "
                              f"(relative paths resolve against the current directory)", where="data.tokenizer",
                              fix="run export from the training directory")
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    EXPORT_OUTPUT.create(staging)
    try:
        state = run.state_dict()
        if adapter_only:
            save_adapter(state, lora, family, staging, base_model=run.meta["train"]["model"]["init"])
        else:
            if lora is not None:
                state = merged_state_dict(state, run.model_config, lora)
            init = run.meta["train"]["model"].get("init")
            family.save_checkpoint(state, run.model_config, staging, layout, Path(init) if init else None,
                                   max_shard_size)
            record_family(staging, family.name)
        write_run_extras(staging, run.audio_spec, run.prompt)  # generation from the export decodes right
        for f in tokenizer.iterdir():  # ship the tokenizer the model was trained with
            if f.is_file() and not _is_model_file(f) and not (staging / f.name).exists():
                shutil.copy2(f, staging / f.name)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def check_layout(family: ModelFamily, layout: str | None) -> str:
    """The family's default layout for None; a layout the family does not have is refused."""
    if layout is None:
        return family.export_layouts[0]
    if layout not in family.export_layouts:
        raise ConfigError(f"model family {family.name} has no {layout!r} layout", where="--layout",
                          fix=f"use one of {list(family.export_layouts)} (default {family.export_layouts[0]})")
    return layout


def record_family(directory: Path, name: str) -> None:
    """Name the family in the exported config.json, so generation and training find it without guessing."""
    config = read_config(directory)
    config[FAMILY_KEY] = name
    write_config(directory, config)


def _is_model_file(path: Path) -> bool:
    """Weights and configs of a checkpoint folder that doubles as the tokenizer folder: never copied over the
    exported ones."""
    return path.name == "config.json" or path.name.endswith((".safetensors", ".safetensors.index.json", ".bin"))
