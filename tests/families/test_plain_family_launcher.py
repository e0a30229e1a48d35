"""The test-only plain Llama family through launch/train.py on 2 CPU ranks (started as the deepspeed launcher
starts them, tests/ranks.py), named by import path alone: ZeRO-3 trains it and saves; a second run resumes
from the step-2 checkpoint and reproduces the first run's steps 3-4 exactly; the run is exported in the
family's own layout and generates from the export. No file of higgs_ds/ names the family
(tests/test_import_graph.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from higgs_ds.export import export
from higgs_ds.inference import GenerationConfig, TTSRequest, generate, load_model
from higgs_ds.models import FAMILY_KEY
from tests.families.plain_llama import PlainAudioModel
from tests.harness import checked, losses, train

pytestmark = pytest.mark.integration

ARCH = "tests.families.plain_llama:FAMILY"
RUN = (f"model.arch={ARCH}", "steps=4", "save_every=2", "keep_last=2")


def test_plain_family_trains_resumes_exports_and_generates(tmp_path, random_data):
    first = tmp_path / "first"
    checked(train(first, random_data, *RUN))
    meta = json.loads((first / "checkpoints" / "step000004" / "config.json").read_text())
    assert meta["family"] == ARCH and meta["model"]["model_type"] == "plain_llama_audio"

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(first / "checkpoints" / "step000002", resumed / "checkpoints" / "step000002")
    (resumed / "checkpoints" / "latest").write_text("step000002")
    checked(train(resumed, random_data, *RUN, "resume=auto"))
    straight, again = losses(first), losses(resumed)
    assert sorted(again) == [3, 4] and all(again[s] == straight[s] for s in (3, 4))

    out = export(first / "checkpoints", tmp_path / "export")
    assert json.loads((out / "config.json").read_text())[FAMILY_KEY] == ARCH
    loaded = load_model(out)
    assert isinstance(loaded.model, PlainAudioModel) and loaded.family.name == ARCH
    renderer = loaded.family.make_renderer(loaded_tokenizer(out), 8)
    result = generate(loaded.model, renderer, [TTSRequest("hello world")],
                      GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=12))
    assert result.delayed[0].shape[0] == 8 and torch.equal(result.delayed[0][:, 0], torch.full((8,), 1024))
    assert result.codes[0].shape[0] == 8 and result.steps >= 1


def loaded_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))
