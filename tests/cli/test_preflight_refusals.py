"""What `train/preflight.py` refuses before any process group starts, in one `error:` line: a model family
that its tokenizer or `model.init` does not match, codes foreign to `model.init`, a resume tag of another
model shape, a split without enough samples for every rank, a LoRA group the family lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import launch.train as train_cli
from tests.cli.test_bad_inputs import _train_args, call, data, no_training, one_error, run, run_unchanged, unchanged
from tests.tts3_utils import tiny_tts3_tokenizer

__all__ = ["data", "no_training", "run", "run_unchanged", "unchanged"]  # the fixtures this module uses

FIXTURE = Path(__file__).parents[1] / "fixtures" / "written_by_0_1"  # a tiny v2 export (4 x 32 codes)


def _tts3_tokenizer(tmp: Path) -> Path:
    tiny_tts3_tokenizer(tmp / "tts3_tokenizer")
    return tmp / "tts3_tokenizer"


def _empty_split(data: dict, tmp: Path) -> Path:
    """What `build` of an empty manifest wrote: an index of no shard, with the codes' spec."""
    index = json.loads((data["train"] / "shards.json").read_text())
    (tmp / "empty").mkdir()
    (tmp / "empty" / "shards.json").write_text(json.dumps({**index, "num_samples": 0, "shards": []}))
    return tmp / "empty"


CASES = {
    # id: (extra overrides from (data, tmp), strings the error line must name)
    "tokenizer_of_another_family": (lambda d, t: ["model.arch=higgs_tts3"],
                                    ["lacks the Higgs TTS 3", "data.tokenizer"]),
    "init_of_another_family": (lambda d, t: ["model.arch=higgs_tts3", f"model.init={FIXTURE / 'v2_export'}",
                                             f"data.tokenizer={_tts3_tokenizer(t)}"],
                               ["is a higgs_v2_dualffn checkpoint", "model.arch=higgs_tts3"]),
    "codes_foreign_to_init": (lambda d, t: [f"model.init={FIXTURE / 'v2_export'}",
                                            f"data.tokenizer={FIXTURE / 'v2_tokenizer'}"],
                              ["model and data disagree"]),
    "unknown_family": (lambda d, t: ["model.arch=higgs_v9"], ["unknown model family", "higgs_v2_dualffn"]),
    "family_module_missing": (lambda d, t: ["model.arch=no_such_pkg.families:FAMILY"], ["cannot import"]),
    "lora_group_the_family_lacks": (lambda d, t: ["model.arch=higgs_tts3", "lora.targets=[audio_mlp]"],
                                    ["audio_mlp", "higgs_tts3"]),
    "train_split_without_samples": (lambda d, t: [f"data.shards={_empty_split(d, t)}"], ["holds 0 samples"]),
    "too_few_samples_for_the_workers": (lambda d, t: ["data.num_workers=40"], ["holds 16 samples", "40"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight_refuses(case, data, tmp_path, capsys, no_training, unchanged):
    make, named = CASES[case]
    argv = _train_args(data, tmp_path / "new_run", *make(data, tmp_path))
    one_error(*call(train_cli.main, argv, capsys), *named)
    assert not (tmp_path / "new_run").exists()


@pytest.mark.integration
def test_resuming_a_checkpoint_of_another_model_shape_is_refused(data, run_unchanged, capsys, no_training,
                                                                  monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as the run was written; only the shape differs
    argv = _train_args(data, run_unchanged, "resume=auto", "model.hidden_size=32")
    one_error(*call(train_cli.main, argv, capsys), "another model shape", "resume=auto")
