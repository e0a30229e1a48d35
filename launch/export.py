"""Consolidate a ZeRO checkpoint into safetensors, in Boson's or the transformers layout.

    python launch/export.py runs/demo/checkpoints --out exported/ --layout hf [--tag step000300]

The "hf" output loads with
`transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(out, use_text_head=True)`;
the "boson" output with `higgs_ds.model.checkpoint.from_pretrained(out)`.
A LoRA run's adapters are merged into the full weights; `--adapter-only` writes the adapter alone
instead (peft's format, loads with `peft.PeftModel.from_pretrained(base, out)`; see higgs_ds.train.lora).

The export is written to a temporary folder beside --out and renamed into place when complete. --out may
not lie inside a run's checkpoints/ (the next save's rotation would delete it, or it would overwrite a
tag's files), and an existing non-empty --out is replaced only with --overwrite.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

from higgs_ds.errors import ArgumentParser, CheckpointError, ConfigError, run_cli
from higgs_ds.model.checkpoint import passthrough_tensors, read_state_dict, save_pretrained
from higgs_ds.model.tts3_checkpoint import AUDIO_TABLE, save_tts3
from higgs_ds.run_dir import COMPLETE, find_run_checkpoint, write_run_extras
from higgs_ds.train.lora import LoraConfig, merged_state_dict, save_adapter


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that would damage a run or silently replace another export."""
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name == "checkpoints" and ((folder / "latest").exists() or any(folder.glob("step*/" + COMPLETE))):
            raise CheckpointError(f"{out} is inside the run checkpoints folder {folder}", where="--out",
                                  fix="export somewhere else, e.g. --out exported/<name>")
        if (folder / COMPLETE).is_file():
            raise CheckpointError(f"{out} is inside checkpoint tag {folder}", where="--out",
                                  fix="export somewhere else, e.g. --out exported/<name>")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file", where="--out", fix="give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty", where="--out", fix="choose a new folder, or pass --overwrite")


def export(ckpt_dir: Path, out: Path, layout: str, tag: str | None = None, max_shard_size: str = "5GB",
           adapter_only: bool = False, overwrite: bool = False) -> Path:
    check_out(out, overwrite)
    if not Path(ckpt_dir).is_dir():
        raise CheckpointError(f"{ckpt_dir} is not a folder", where="checkpoints", fix="give a run's checkpoints/")
    run = find_run_checkpoint(ckpt_dir, tag)
    if run is None:
        raise CheckpointError(f"no training checkpoint {tag or '(latest)'} in {ckpt_dir}", where="checkpoints",
                              fix="give a run dir or its checkpoints/ folder")
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
    staging.mkdir(parents=True)
    try:
        state = run.state_dict()
        if adapter_only:
            save_adapter(state, lora, staging, base_model=run.meta["train"]["model"]["init"])
        else:
            if lora is not None:
                state = merged_state_dict(state, run.model_config, lora)
            save_model(state, run, staging, layout, max_shard_size)
        write_run_extras(staging, run.audio_spec, run.prompt)  # generation from the export decodes right
        for f in tokenizer.iterdir():  # ship the tokenizer the model was trained with
            if f.is_file() and not _is_model_file(f) and not (staging / f.name).exists():
                shutil.copy2(f, staging / f.name)
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def save_model(state: dict, run, out: Path, layout: str, max_shard_size: str) -> None:
    """v2: the chosen layout. Higgs TTS 3: the released layout, in the dtype of the folder the run started
    from, with that folder's bundled codec tensors copied unchanged."""
    if run.model_config.arch != "higgs_tts3":
        save_pretrained(state, run.model_config, out, layout=layout, max_shard_size=max_shard_size)
        return
    init = run.meta["train"]["model"].get("init")
    passthrough, dtype = {}, None
    if init and Path(init).is_dir():
        passthrough = passthrough_tensors(init)
        dtype = read_state_dict(init, meta=True)[AUDIO_TABLE].dtype
    save_tts3(state, run.model_config, out, passthrough, dtype=dtype, max_shard_size=max_shard_size)


def _is_model_file(path: Path) -> bool:
    """Weights and configs of a checkpoint folder that doubles as the tokenizer folder: never copied over the
    exported ones."""
    return path.name == "config.json" or path.name.endswith((".safetensors", ".safetensors.index.json", ".bin"))


def _replace(staging: Path, out: Path) -> None:
    """Move the finished export into place; an old --out (with --overwrite) is renamed away first."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> Path:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, help="the run's checkpoints/ directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layout", choices=("boson", "hf"), default="hf",
                   help="Higgs Audio v2 layout (a Higgs TTS 3 run always writes the released TTS 3 layout)")
    p.add_argument("--tag", help="checkpoint tag (default: latest)")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--adapter-only", action="store_true", help="a LoRA run: write the adapter alone, unmerged")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    a = p.parse_args(argv)
    out = export(a.checkpoints, a.out, a.layout, a.tag, a.max_shard_size, a.adapter_only, a.overwrite)
    print(out)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
