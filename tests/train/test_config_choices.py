"""Enum-like config keys are `Literal` types: a value outside the choices fails when the config loads,
before any process group starts, with an error naming the key, the bad value and the allowed ones."""

import typing

import pytest

from higgs_ds import ops
from higgs_ds.train.config import TrainConfig, load_config


@pytest.mark.parametrize("override, message", [
    ("ops_backend=trition", "ops_backend='trition': expected one of 'auto', 'torch', 'triton'"),
    ("precision=fp16", "precision='fp16': expected one of 'auto', 'fp32', 'bf16'"),
    ("freeze=all", "freeze='all': expected one of 'none', 'audio_only'"),
    ("data.on_topology_change=restart", "data.on_topology_change='restart': expected one of 'error', 'restart_epoch'"),
    ("loggers=[wandb,tb]", "loggers=['wandb', 'tb']: expected a list, each one of 'wandb', 'tensorboard'"),
])
def test_a_bad_choice_names_the_key_the_value_and_the_choices(override, message):
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_every_choice_is_accepted():
    cfg = load_config(None, ["ops_backend=triton", "precision=bf16", "freeze=audio_only"])
    assert (cfg.ops_backend, cfg.precision, cfg.freeze) == ("triton", "bf16", "audio_only")


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(ValueError, match=r"ops_backend='trition': expected one of 'auto', 'torch', 'triton'"):
        TrainConfig(ops_backend="trition")


def test_the_ops_backend_choices_are_the_dispatchers():
    hint = typing.get_type_hints(TrainConfig)["ops_backend"]
    assert typing.get_args(hint) == typing.get_args(ops.OpsBackend) == ("auto", "torch", "triton")


def test_the_launcher_rejects_it_before_any_rendezvous(monkeypatch, capsys):
    from launch import train as launcher

    monkeypatch.setattr(launcher, "run_training", lambda *a: pytest.fail("training started"))
    monkeypatch.setattr("higgs_ds.train.distributed.init_distributed", lambda *a: pytest.fail("rendezvous"))
    assert launcher.main(["ops_backend=trition"]) == 2
    assert "ops_backend='trition': expected one of 'auto', 'torch', 'triton'" in capsys.readouterr().err
