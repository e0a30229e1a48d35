"""The one text gate: at least one letter or digit once normalised (numbers not yet read out), the same
answer from every entry point that takes a transcript: the importer, the manifest parser `build` uses,
and a generation request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from higgs_ds.data.importers.common import AudioArray, SourceRow, check_rows
from higgs_ds.data.manifest import BadSampleError, parse_line
from higgs_ds.data.text import EMPTY, NO_WORDS, unspeakable
from higgs_ds.errors import ConfigError
from higgs_ds.inference.prompt import TTSRequest

TEXTS = {  # text -> what the gate says
    "مرحبا بكم": None,
    "وَمِنْ": None,  # letters with their diacritics
    "10^30": None,  # digits count: the numbers are read out later
    "٣": None,
    "ok": None,
    "؟ 5": None,
    "": EMPTY,
    "\u0640\u0640\u0640": EMPTY,  # tatweel
    "\u200b\u200c\u200d \t": EMPTY,  # zero-width characters and spaces
    "\u064e\u064f\u0650\u0651\u0652": NO_WORDS,  # diacritics alone (H10, H14)
    "\U0001f600\U0001f389": NO_WORDS,  # emoji (H11, H13)
    "؟!... «»": NO_WORDS,  # punctuation (H12)
    "\u0640\u064e": NO_WORDS,
}


@pytest.mark.parametrize("text", list(TEXTS), ids=[ascii(t) for t in TEXTS])
def test_every_entry_point_gives_the_gate_s_answer(text, tmp_path):
    why = TEXTS[text]
    assert unspeakable(text) == why

    codes = tmp_path / "codes.npy"
    np.save(codes, np.zeros((2, 3), np.int64))
    line = json.dumps({"id": "a", "text": text, "codes": str(codes)}, ensure_ascii=False)
    if why is None:
        assert parse_line(line, 1, tmp_path / "m.jsonl").text == text
    else:
        with pytest.raises(BadSampleError) as err:
            parse_line(line, 1, tmp_path / "m.jsonl")
        assert err.value.kind == ("empty_text" if why == EMPTY else "no_words")

    row = SourceRow("corpus:1", "a", text, AudioArray(np.ones(160, np.float32), 16000))
    result = check_rows([row], tmp_path / "import")
    assert [r["kind"] for r in result.rejects] == ([] if why is None else [err.value.kind])

    if why is None:
        TTSRequest(text)
    else:
        with pytest.raises(ConfigError, match=why):
            TTSRequest(text)


def test_a_reference_transcript_passes_the_same_gate():
    with pytest.raises(ConfigError, match="ref_text"):
        TTSRequest("مرحبا", ref_text="\U0001f600", ref_codes=np.zeros((2, 3), np.int64))
