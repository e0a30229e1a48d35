"""The error contract itself: one line from rank 0, the other ranks quiet unless the error is theirs alone,
tracebacks for bugs."""

from __future__ import annotations

import signal

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


def test_before_the_rendezvous_another_rank_leaves_the_report_to_rank_0(capsys, monkeypatch):
    """Every rank checks the same input: rank 0 says it, and its exit makes the launcher stop the others
    (SIGTERM), which exit quietly. A rank still running after the grace period says it itself."""
    import higgs_ds.errors as errors

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(errors, "PEER_GRACE_S", 0.05)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert run_cli(_raise(CheckpointError("no such tag", where="resume=step9"))) == 2
        stop_handler = signal.getsignal(signal.SIGTERM)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert capsys.readouterr().err == "rank 1: error: no such tag (resume=step9)\n"
    exits = []
    monkeypatch.setattr(errors.os, "_exit", exits.append)
    stop_handler(signal.SIGTERM, None)  # what the launcher sends once rank 0 has exited
    assert exits == [2]


def test_after_the_rendezvous_a_rank_names_its_own_error_at_once(capsys, monkeypatch, tmp_path):
    """Past the rendezvous an error can be one rank's alone (its shard, its checkpoint file); one that a
    peer's exit caused is not that rank's to report."""
    import torch.distributed as dist

    import higgs_ds.errors as errors

    monkeypatch.setattr(errors, "PEER_GRACE_S", 60.0)  # not waited for: the test would time out
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setenv("RANK", "1")
        assert run_cli(_raise(CheckpointError("higgs_rank1.pt is damaged", where="resume=auto"))) == 2
        assert capsys.readouterr().err == "rank 1: error: higgs_rank1.pt is damaged (resume=auto)\n"
        gone = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234")
        try:
            raise CheckpointWriteError(5, "writing checkpoint step000006 failed") from gone
        except CheckpointWriteError as write_error:
            assert run_cli(_raise(write_error)) == 1
        err = capsys.readouterr().err
        assert "error:" not in err and "another rank exited (CheckpointWriteError)" in err
    finally:
        dist.destroy_process_group()


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
