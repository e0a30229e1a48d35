"""Consolidate a ZeRO checkpoint into safetensors, in Boson's or the transformers layout.

    python launch/export.py runs/demo/checkpoints --out exported/ --layout hf [--tag step000300]

The "hf" output loads with
`transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(out, use_text_head=True)`;
the "boson" output with `higgs_ds.model.checkpoint.from_pretrained(out)`.
A LoRA run's adapters are merged into the full weights; `--adapter-only` writes the adapter alone
instead (peft's format, loads with `peft.PeftModel.from_pretrained(base, out)`; see higgs_ds.train.lora).
"""

import argparse
import shutil
from pathlib import Path

from higgs_ds.model.checkpoint import save_pretrained
from higgs_ds.run_dir import find_run_checkpoint, write_run_extras
from higgs_ds.train.lora import LoraConfig, merged_state_dict, save_adapter


def export(ckpt_dir: Path, out: Path, layout: str, tag: str | None = None, max_shard_size: str = "5GB",
           adapter_only: bool = False) -> Path:
    run = find_run_checkpoint(ckpt_dir, tag)
    if run is None:
        raise FileNotFoundError(f"no checkpoint {tag or '(latest)'} in {ckpt_dir}")
    lora = LoraConfig.from_run_config(run.meta["train"])  # None: a full fine-tuning run
    if adapter_only and lora is None:
        raise ValueError(f"{run.path} is not a LoRA run (lora.enabled was false): there is no adapter to export")
    state = run.state_dict()
    if adapter_only:
        save_adapter(state, lora, out, base_model=run.meta["train"]["model"]["init"])
    else:
        if lora is not None:
            state = merged_state_dict(state, run.model_config, lora)
        save_pretrained(state, run.model_config, out, layout=layout, max_shard_size=max_shard_size)
    write_run_extras(out, run.audio_spec, run.prompt)  # generation from the export decodes with the right codec
    tokenizer = run.tokenizer_dir
    if tokenizer is None:
        raise FileNotFoundError(f"the run's tokenizer {run.meta['train']['data']['tokenizer']} is not a directory "
                                f"(relative paths resolve against the current directory): run export from the "
                                f"training directory")
    for f in tokenizer.iterdir():  # ship the tokenizer the model was trained with
        if f.is_file() and f.name != "config.json":
            shutil.copy2(f, out / f.name)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, help="the run's checkpoints/ directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layout", choices=("boson", "hf"), default="hf")
    p.add_argument("--tag", help="checkpoint tag (default: latest)")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--adapter-only", action="store_true", help="a LoRA run: write the adapter alone, unmerged")
    a = p.parse_args(argv)
    print(export(a.checkpoints, a.out, a.layout, a.tag, a.max_shard_size, a.adapter_only))


if __name__ == "__main__":
    main()
