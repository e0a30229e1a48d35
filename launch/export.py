"""Export a training run's checkpoint as a model folder of its family's layouts (`higgs_ds.export`).

    python launch/export.py runs/demo/checkpoints --out exported/ [--layout hf] [--tag step000300]

Higgs Audio v2 writes "hf" by default, which loads with
`transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(out, use_text_head=True)`, or "boson"
(Boson's original names); Higgs TTS 3 writes its released layout ("released"), bundled codec included. Every
export loads with `higgs_ds.models.pretrained.from_pretrained(out)` and generates with launch/generate.py.
A LoRA run's adapters are merged into the full weights; `--adapter-only` writes the adapter alone
instead (peft's format, loads with `peft.PeftModel.from_pretrained(base, out)`; see higgs_ds.train.lora).

The export is written to a temporary folder beside --out and renamed into place when complete. --out may
not be, hold or lie inside the checkpoints it reads, nor lie inside any run's checkpoints/ (the next save's
rotation would delete it, or it would overwrite a tag's files). An existing non-empty --out is replaced only
when an earlier export wrote it, and only with --overwrite; any other non-empty folder is refused.
"""

import argparse
import sys
from pathlib import Path

from higgs_ds.cli_options import byte_size
from higgs_ds.errors import ArgumentParser, run_cli
from higgs_ds.export import export


def main(argv=None) -> Path:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, help="the run's checkpoints/ directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layout", help="a checkpoint layout of the run's model family (default: the family's own; "
                                    "Higgs Audio v2: hf or boson, Higgs TTS 3: released)")
    p.add_argument("--tag", help="checkpoint tag (default: latest)")
    p.add_argument("--max-shard-size", type=byte_size, default="5GB", help="safetensors shard size, e.g. 5GB, 500MB")
    p.add_argument("--adapter-only", action="store_true", help="a LoRA run: write the adapter alone, unmerged")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out (never another folder)")
    a = p.parse_args(argv)
    out = export(a.checkpoints, a.out, a.layout, a.tag, a.max_shard_size, a.adapter_only, a.overwrite)
    print(out)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
