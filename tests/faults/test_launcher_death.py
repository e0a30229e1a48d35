"""A run whose launcher goes away, or that gets Ctrl-C, stops as a preempted one does: every rank finishes its
step, they write a checkpoint together, one line says so, and no rank outlives the launcher by more than
30 s. The checkpoint resumes exactly (`resume=auto` reproduces the uninterrupted run's losses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from higgs_ds.run_dir import is_complete, latest_tag
from higgs_ds.train.checkpointing import FAULT_ENV
from higgs_ds.train.metrics import read_metrics
from tests.harness import RECIPE, REPO, RESUME_STEPS, checked, env, finish, losses, output, start_train, tiny_overrides

pytestmark = pytest.mark.integration

OUTLIVE_S = 30


def _ranks_of(run: Path) -> list[psutil.Process]:
    """The training ranks of `run` still alive (not the launchers, whose command lines name the run too)."""
    alive = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(proc.info["cmdline"] or [])
        if (f"run_dir={run}" in line and "launch/train.py" in line and "deepspeed.launcher" not in line
                and "bin/deepspeed" not in line and proc.info["status"] != psutil.STATUS_ZOMBIE):
            alive.append(proc)
    return alive


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stopped_cleanly(proc, run: Path, signalled_at: float, why: str) -> subprocess.CompletedProcess:
    done = finish(proc, timeout=OUTLIVE_S + 60)  # returns once every rank has closed the launcher's pipes
    _wait_for(lambda: not _ranks_of(run), OUTLIVE_S, "the ranks to exit")
    assert time.monotonic() - signalled_at <= OUTLIVE_S, output(done)
    text = done.stdout + done.stderr
    assert text.count("stop requested") == 1 and f"stop requested ({why})" in text, output(done)
    assert "Traceback" not in text, output(done)
    ckpts = run / "checkpoints"
    assert latest_tag(ckpts) and is_complete(ckpts / latest_tag(ckpts)), output(done)
    return done


def _logged(run: Path) -> int:
    return max((r["step"] for r in read_metrics(run / "metrics.jsonl")), default=0)


def _latest_step(run: Path) -> int:
    return int(latest_tag(run / "checkpoints").removeprefix("step"))


def test_killing_the_deepspeed_runner_mid_run_or_during_a_save_stops_every_rank_and_resumes_exactly(
        tmp_path, random_data, reference_run):
    """The runner gets SIGTERM (as a scheduler or a user kills the command they started) twice in one run:
    first between saves (H8), then, resumed, while a save is under way (H7). Each time every rank stops within
    30 s with a complete checkpoint, and the twice-resumed run reproduces the uninterrupted one's losses."""
    run = tmp_path / "run"
    proc = start_train(run, random_data, *RESUME_STEPS, launcher="deepspeed")
    _wait_for(lambda: _logged(run) >= 3 or proc.poll() is not None, 180, "step 3")  # past step 2's save
    proc.send_signal(signal.SIGTERM)  # the ranks are training step 4 (or just past it): a new checkpoint is due
    _stopped_cleanly(proc, run, time.monotonic(), "launcher exited")
    first_stop = _latest_step(run)
    assert 3 <= first_stop < 8, first_stop

    save = first_stop + 2 - first_stop % 2  # the next scheduled save (save_every=2)
    proc = start_train(run, random_data, *RESUME_STEPS, "resume=auto", launcher="deepspeed",
                       **{FAULT_ENV: f"engine_saved:{save}:0:slow"})
    _wait_for(lambda: (run / "checkpoints" / f"step{save:06d}").is_dir() or proc.poll() is not None, 180,
              f"the save of step {save}")
    proc.send_signal(signal.SIGTERM)
    _stopped_cleanly(proc, run, time.monotonic(), "launcher exited")
    assert save <= _latest_step(run) < 10  # it stopped early, at a step boundary after the save under way

    checked(finish(start_train(run, random_data, *RESUME_STEPS, "resume=auto")))
    assert losses(run, repeats=True) == losses(reference_run)


def test_ctrl_c_checkpoints_and_exits_130(tmp_path, random_data):
    """A lone process (no launcher) and its data workers get SIGINT from the terminal, as one process group."""
    run = tmp_path / "run"
    args = [sys.executable, "launch/train.py", "--deepspeed", "ds_configs/zero3.json", *RECIPE, f"run_dir={run}",
            *tiny_overrides(random_data, "steps=1000", "save_every=1000", "eval_every=0", "predict_every=0",
                            "log_every=1", with_eval=False)]
    proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(lambda: (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2
              or proc.poll() is not None, 180, "two logged steps")
    os.killpg(proc.pid, signal.SIGINT)
    done = _stopped_cleanly(proc, run, time.monotonic(), "SIGINT")
    assert done.returncode == 130, output(done)
