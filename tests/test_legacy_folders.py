"""Run folders and exports written by higgs-ds 0.1, before model families, still load with their family found
from what they recorded, and generate exactly what they generated then (tests/fixtures/written_by_0_1/)."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from higgs_ds.inference import GenerationConfig, TTSRequest, generate, load_model
from higgs_ds.models import get_family

FIXTURE = Path(__file__).parent / "fixtures" / "written_by_0_1"
EXPECTED = json.loads((FIXTURE / "expected_generation.json").read_text())


@pytest.mark.parametrize("folder, tokenizer, family", [
    ("v2_run", "v2_tokenizer", "higgs_v2_dualffn"),  # run metadata without a "family" key
    ("v2_export", "v2_tokenizer", "higgs_v2_dualffn"),  # transformers layout, no higgs_ds_family key
    ("v2_export_boson", "v2_tokenizer", "higgs_v2_dualffn"),
    ("tts3_run", "tts3_tokenizer", "higgs_tts3"),
    ("tts3_export", "tts3_tokenizer", "higgs_tts3"),
])
def test_a_folder_written_before_families_generates_as_it_did(folder, tokenizer, family):
    loaded = load_model(FIXTURE / folder)
    assert loaded.family is get_family(family)
    k = loaded.model.config.audio_num_codebooks
    renderer = loaded.family.make_renderer(AutoTokenizer.from_pretrained(str(FIXTURE / tokenizer)), k)
    result = generate(loaded.model, renderer, [TTSRequest("hello world")],
                      GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=10))
    assert result.delayed[0].tolist() == EXPECTED[folder]["delayed"]
    assert result.finished[0] == EXPECTED[folder]["finished"]
