"""Malformed `launch/train.py key=value` overrides: every invalid value ends in one line naming the key,
exit 2, before any distributed setup; valid ones reach the training loop untouched."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from higgs_ds.train.config import TrainConfig
from launch import train as train_cli
from tests.harness import output, train


def _leaf_keys(cls, prefix: str = "") -> dict[str, object]:
    hints, keys = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys.update(_leaf_keys(hints[f.name], f"{prefix}{f.name}."))
        else:
            keys[f"{prefix}{f.name}"] = hints[f.name]
    return keys


KEYS = _leaf_keys(TrainConfig)
GROUPS = sorted({k.rsplit(".", 1)[0] for k in KEYS if "." in k})
# raw values of the wrong type for each kind of field (YAML reads them as written)
WRONG = {int: ["abc", "1.5", "[1, 2]", "{a: 1}", "true", "nan", "''"],
         float: ["abc", "[1]", "true", "nan", "-inf", "{a: 1}", "''"],
         bool: ["abc", "2", "1.5", "[true]", "null"],
         str: ["[1, 2]", "{a: 1}", "true"]}
NOT_YAML = ["[", "{a: [}", "'unterminated", "a: b: c", "!!python/object:os.system ls", "*alias"]
OUT_OF_RANGE = ["steps=0", "grad_accum=-1", "keep_last=0", "save_every=0", "stop_at=0", "precision=fp8",
                "freeze=all", "optim.lr=0", "optim.min_lr_ratio=2", "optim.warmup_steps=-5", "optim.betas=[0.9]",
                "loss.text_weight=-1", "loss.codebook_weights=[a, b]", "data.stream.max_batch_size=0",
                "data.stream.max_seq_len=9999999", "data.num_workers=-1",
                "data.on_topology_change=maybe", "lora.rank=0", "lora.targets=[nothing]", "model.init=/nope",
                "peak_tflops=-3", "dist_timeout_s=0"]


def _kind(hint) -> type | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return next((t for t in (bool, int, float, str) if t in args), None)


def _wrong_overrides() -> list[str]:
    out = [f"{k}={v}" for k, hint in KEYS.items() for v in WRONG.get(_kind(hint), [])]
    return out + [f"{g}=5" for g in GROUPS] + ["steps.sub=1", "nope=1", "optim.nope=1", "steps", "=3"]


@pytest.fixture
def no_training(monkeypatch):
    started = []
    monkeypatch.setattr(train_cli, "train", lambda cfg, ds: started.append(cfg))
    return started


def _assert_clean_error(override: str, code: int, err: str, started: list) -> None:
    assert code == 2 and not started, (override, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (override, err)
    key = override.split("=", 1)[0]
    named = [key, key.rsplit(".", 1)[-1], key.rsplit(".", 1)[0] + ":", repr(override)]
    assert any(n and n in lines[0] for n in named), (override, err)


@pytest.mark.parametrize("override", _wrong_overrides() + [f"steps={v}" for v in NOT_YAML] + OUT_OF_RANGE)
def test_invalid_override_is_one_line_naming_the_key(override, capsys, no_training):
    code = train_cli.main(["--config", "recipes/demo.yaml", override])
    _assert_clean_error(override, code, capsys.readouterr().err, no_training)


VALUES = st.one_of(st.sampled_from(NOT_YAML + [v for vs in WRONG.values() for v in vs]),
                   st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
                   st.integers().map(str), st.floats().map(str))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(KEYS) + GROUPS), raw=VALUES)
def test_any_override_loads_or_fails_in_one_line(key, raw, capsys, no_training):
    no_training.clear()
    capsys.readouterr()
    code = train_cli.main(["--config", "recipes/demo.yaml", f"{key}={raw}"])
    if code == 2:
        _assert_clean_error(f"{key}={raw}", code, capsys.readouterr().err, no_training)
    else:
        assert code == 0 and len(no_training) == 1


@pytest.mark.integration
def test_through_the_launcher_no_rank_starts_training(tmp_path, random_data):
    proc = train(tmp_path / "run", random_data, "optim.lr=fast", ranks=2, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, output(proc)
    assert "error: optim.lr='fast': expected a number" in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()
