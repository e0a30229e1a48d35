"""What `train/preflight.py` refuses before any process group starts, in one `error:` line: a model family
that its tokenizer or `model.init` does not match, codes foreign to `model.init`, a resume tag of another
model shape, a split without enough samples for every rank, a LoRA group the family lacks, DPO on a split
without preference pairs (an ordinary build)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import launch.train as train_cli
from higgs_ds.train.preflight import check_pair_split
from tests.cli.test_bad_inputs import _train_args, call, data, no_training, one_error, run, run_unchanged, unchanged
from tests.train.preference_data import write_pair_split
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


def _marked(split: Path, tmp: Path, pairs: bool) -> Path:
    """`split` with its index saying whether it holds pairs, as `build` and `preferences` write it now."""
    shutil.copytree(split, tmp / f"marked_{pairs}")
    index = json.loads((tmp / f"marked_{pairs}" / "shards.json").read_text())
    (tmp / f"marked_{pairs}" / "shards.json").write_text(json.dumps({**index, "pairs": pairs}))
    return tmp / f"marked_{pairs}"


NO_PAIRS = ["holds no preference pairs", "data.shards=", "prepare_data.py preferences"]
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
    # an index without the `pairs` field (written before it existed): its first sample has no rejected_codes
    "dpo_on_an_ordinary_build": (lambda d, t: ["objective=dpo"], NO_PAIRS),
    "dpo_on_a_build_indexed_as_no_pairs": (lambda d, t: ["objective=dpo",
                                                         f"data.shards={_marked(write_pair_split(t / 'p'), t, False)}"],
                                           NO_PAIRS),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight_refuses(case, data, tmp_path, capsys, no_training, unchanged):
    make, named = CASES[case]
    argv = _train_args(data, tmp_path / "new_run", *make(data, tmp_path))
    one_error(*call(train_cli.main, argv, capsys), *named)
    assert not (tmp_path / "new_run").exists()


def test_pair_splits_pass_by_their_index_or_their_first_sample(data, tmp_path):
    pairs = write_pair_split(tmp_path / "pairs")  # indexed without the `pairs` field: the first sample tells
    check_pair_split(str(pairs))
    check_pair_split(str(_marked(data["train"], tmp_path, True)))  # the index is trusted, no tar is opened


@pytest.mark.integration
def test_resuming_a_checkpoint_of_another_model_shape_is_refused(data, run_unchanged, capsys, no_training,
                                                                  monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as the run was written; only the shape differs
    argv = _train_args(data, run_unchanged, "resume=auto", "model.hidden_size=32")
    one_error(*call(train_cli.main, argv, capsys), "another model shape", "resume=auto")
