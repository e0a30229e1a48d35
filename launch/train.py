"""Train a model of any family (`model.arch`: Higgs Audio v2 DualFFN by default, Higgs TTS 3, ...) with DeepSpeed.

    deepspeed launch/train.py --deepspeed ds_configs/zero3.json --config recipes/demo.yaml [key=value ...]

Overrides use dotted keys of `higgs_ds.train.config.TrainConfig`, e.g. `steps=50 optim.lr=3e-4
model.init=/ckpt/higgs-audio-v2 resume=auto` or `model.arch=higgs_tts3`.
"""

import argparse

import yaml

from higgs_ds.errors import ArgumentParser, ConfigError, run_cli
from higgs_ds.train import stopping
from higgs_ds.train.config import load_config
from higgs_ds.train.distributed import exit_process
from higgs_ds.train.loop import train as run_training
from higgs_ds.train.preflight import check_training_inputs


def train(cfg, ds_json: str) -> int:
    """Train; the exit status: 0, or 130 when Ctrl-C stopped the run (after its checkpoint)."""
    check_training_inputs(cfg, ds_json)  # on every rank, before the rendezvous: bad input costs nothing
    run_training(cfg, ds_json)
    return stopping.exit_status()


def _main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None
    return train(cfg, ds_json or "ds_configs/zero3.json")


def main(argv=None) -> int:
    """One `error:` line and exit 2 for bad input (rank 0 says it); a traceback for anything else."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    exit_process(main())
