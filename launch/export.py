"""Consolidate a ZeRO checkpoint into safetensors, in Boson's or the transformers layout.

    python launch/export.py runs/demo/checkpoints --out exported/ --layout hf [--tag step000300]

The "hf" output loads with
`transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(out, use_text_head=True)`;
the "boson" output with `higgs_ds.model.checkpoint.from_pretrained(out)`.
"""

import argparse
import json
import shutil
from pathlib import Path

from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from higgs_ds.model.checkpoint import save_pretrained
from higgs_ds.model.config import HiggsAudioConfig
from higgs_ds.train.checkpointing import latest_tag


def export(ckpt_dir: Path, out: Path, layout: str, tag: str | None = None, max_shard_size: str = "5GB") -> Path:
    tag = tag or latest_tag(ckpt_dir)
    if tag is None or not (ckpt_dir / tag).is_dir():
        raise FileNotFoundError(f"no checkpoint {tag or '(latest)'} in {ckpt_dir}")
    meta = json.loads((ckpt_dir / tag / "config.json").read_text())
    config = HiggsAudioConfig.from_boson_dict(meta["model"])
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    save_pretrained(state, config, out, layout=layout, max_shard_size=max_shard_size)
    tokenizer = Path(meta["train"]["data"]["tokenizer"])
    if not tokenizer.is_dir():
        raise FileNotFoundError(f"the run's tokenizer {tokenizer} is not a directory (relative paths resolve "
                                f"against the current directory): run export from the training directory")
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
    a = p.parse_args(argv)
    print(export(a.checkpoints, a.out, a.layout, a.tag, a.max_shard_size))


if __name__ == "__main__":
    main()
