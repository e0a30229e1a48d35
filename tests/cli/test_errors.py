"""The error contract itself: one line from rank 0, silence elsewhere, tracebacks for bugs."""

from __future__ import annotations

import pytest

from higgs_ds.audio_spec import AudioSpecMismatchError
from higgs_ds.errors import ArgumentParser, CheckpointError, ConfigError, UserError, run_cli
from higgs_ds.train.checkpointing import CheckpointWriteError


def _raise(exc: BaseException):
    def main(argv):
        raise exc
    return main


def test_a_user_error_is_one_line_naming_where_and_how(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    exc = ConfigError("bad value\n  for a key", where="optim.lr", fix="give a number")
    assert run_cli(_raise(exc)) == 2
    assert capsys.readouterr().err == "error: bad value for a key (optim.lr): give a number\n"


def test_other_ranks_stay_silent(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert run_cli(_raise(CheckpointError("no such tag"))) == 2
    assert capsys.readouterr().err == ""


def test_a_peer_gone_after_the_rendezvous_is_quiet_on_other_ranks_only(capsys, monkeypatch):
    gone = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234")
    monkeypatch.setenv("RANK", "1")
    assert run_cli(_raise(gone)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err and "another rank exited" in err
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="Connection closed"):  # rank 0 has no one else to explain it
        run_cli(_raise(gone))


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(KeyError):
        run_cli(_raise(KeyError("model.layers.0")))


def test_existing_error_types_are_user_errors_with_their_message(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    mismatch = AudioSpecMismatchError("model and data disagree: num_codebooks 8 vs 12\n  train shards x: dac")
    assert isinstance(mismatch, ValueError) and run_cli(_raise(mismatch)) == 2
    assert capsys.readouterr().err == "error: model and data disagree: num_codebooks 8 vs 12 train shards x: dac\n"
    disk_full = CheckpointWriteError(28, "writing checkpoint failed: no space left on device")
    assert isinstance(disk_full, OSError | UserError) and disk_full.errno == 28
    assert run_cli(_raise(disk_full)) == 1  # the input was fine: the disk was not


def test_flag_errors_are_config_errors():
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--workers", type=int)
    with pytest.raises(ConfigError, match=r"--workers.*\(tool\): see tool --help"):
        parser.parse_args(["--workers", "x"])
    assert run_cli(lambda argv: parser.parse_args(argv) and 0, ["--workers", "3"]) == 0
