"""Train a Higgs Audio v2 DualFFN model with DeepSpeed.

    deepspeed launch/train.py --deepspeed ds_configs/zero3.json --config recipes/demo.yaml [key=value ...]

Overrides use dotted keys of `higgs_ds.train.config.TrainConfig`, e.g. `steps=50 optim.lr=3e-4
model.init=/ckpt/higgs-audio-v2 resume=auto`.
"""

import argparse
import sys

import yaml

from higgs_ds.train.checkpointing import CheckpointWriteError
from higgs_ds.train.config import load_config
from higgs_ds.train.loop import train


def _fail(exc: Exception, code: int) -> int:
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, no traceback
    return code


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe (see recipes/)")
    p.add_argument("--deepspeed", nargs="?", const=True, default=None,
                   help="DeepSpeed JSON (or a bare flag, with --deepspeed_config)")
    p.add_argument("--deepspeed_config", help="DeepSpeed JSON (the launcher's older spelling)")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the DeepSpeed launcher")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = p.parse_args(argv)
    ds_json = args.deepspeed if isinstance(args.deepspeed, str) else args.deepspeed_config
    try:  # before any distributed setup: a bad setting costs no rendezvous
        cfg = load_config(args.config, args.overrides)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as exc:
        return _fail(exc, 2)
    try:
        train(cfg, ds_json or "ds_configs/zero3.json")
    except CheckpointWriteError as exc:  # disk full: the previous checkpoint is intact, say so in one line
        return _fail(exc, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
