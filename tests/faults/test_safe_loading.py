"""A checkpoint or codec file whose unpickling would run code (here: create a marker file) is refused by
every loader of ours, before the code runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from higgs_ds.codec import CodecConfig, load_codec
from higgs_ds.errors import CodecError
from higgs_ds.run_dir import find_run_checkpoint
from higgs_ds.train.checkpointing import COMPLETE, safe_load
from tests.harness import RESUME_STEPS, output, train


class _Payload:
    """Unpickling calls open(marker, "w"): a file appears if a loader runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _poison(path: Path, marker: Path) -> None:
    torch.save({"module": _Payload(marker), "weights": torch.zeros(3)}, path)


def _remark_complete(tag: Path) -> None:
    """Record the poisoned files' sizes, so the checkpoint passes the completeness check and is loaded."""
    done = json.loads((tag / COMPLETE).read_text())
    done["files"] = {p.name: p.stat().st_size for p in tag.iterdir() if p.name in done["files"]}
    (tag / COMPLETE).write_text(json.dumps(done))


def test_safe_load_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    _poison(tmp_path / "evil.pt", marker)
    with pytest.raises(Exception, match="Weights only load failed"):
        safe_load(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.integration
def test_resume_from_a_poisoned_checkpoint_is_refused(tmp_path, random_data, reference_run):
    """Our rank state and DeepSpeed's own optimizer shard, both poisoned, in a checkpoint marked complete."""
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(reference_run / "checkpoints", run / "checkpoints")
    tag = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    for name in ("higgs_rank1.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        _poison(tag / name, marker)
    _remark_complete(tag)
    proc = train(run, random_data, *RESUME_STEPS[1:], "steps=12", "resume=auto")
    assert proc.returncode != 0 and "Weights only load failed" in proc.stdout + proc.stderr, output(proc)
    assert not marker.exists()


def test_codec_loader_refuses_a_pickle_that_runs_code(tmp_path):
    """A DAC weights file (descript-audio-codec loads it with torch's default, weights_only=True)."""
    marker = tmp_path / "pwned"
    _poison(tmp_path / "codec.pth", marker)
    with pytest.raises(CodecError, match="it holds code, which is never loaded") as err:
        load_codec(CodecConfig(path=str(tmp_path / "codec.pth"), kind="dac", device="cpu"))
    assert not marker.exists()
    assert "weights_only" not in str(err.value)  # torch's advice to load it with weights_only=False is not passed on


@pytest.mark.integration
def test_generation_and_export_loading_a_run_refuse_a_poisoned_shard(tmp_path, reference_run):
    marker = tmp_path / "pwned"
    shutil.copytree(reference_run / "checkpoints", tmp_path / "checkpoints")
    tag = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text()
    _poison(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    _remark_complete(tag)
    with pytest.raises(Exception, match="Weights only load failed"):
        find_run_checkpoint(tmp_path).state_dict()
    assert not marker.exists()
    assert torch.load is not safe_load  # the weights-only swap is undone afterwards
