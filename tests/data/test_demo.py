import random
import shutil

import pytest
import soundfile

from higgs_ds.data.demo import DEMO_SPEAKERS, _manifest_rows, demo_sentences, synthesize
from higgs_ds.models.higgs_v2.prompt import HIGGS_SPECIAL_TOKENS
from higgs_ds.data.text import ArabicTextConfig, normalize_arabic

SEED_SENTENCES = ["حلو لو سميته حاجة ممكن الأهالي يسمعوه",
                  "وَمِنْ ثُمَّ قَالُوا أَنَّهُ لا يُوجَدُ إِلا أَنْ نَأْخُذَ سَيَنْسَتِيلْ."]


def test_corpus_is_large_varied_and_holds_the_seed_sentences():
    sentences = demo_sentences()
    assert len(sentences) >= 200 and len(set(sentences)) == len(sentences)
    assert all(s in sentences for s in SEED_SENTENCES)
    plain = ArabicTextConfig(keep_diacritics=False)
    diacritised = [s for s in sentences if normalize_arabic(s, plain) != s]
    assert 30 <= len(diacritised) <= len(sentences) - 100  # with and without tashkeel


def test_tokenizer_has_every_higgs_special_token(tokenizer):
    for token in HIGGS_SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert ids == [tokenizer.convert_tokens_to_ids(token)]
    text = SEED_SENTENCES[1]
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text  # logical-order round trip


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_synthesis_is_idempotent(tmp_path):
    path = tmp_path / "a.wav"
    synthesize(SEED_SENTENCES[0], DEMO_SPEAKERS[0], path)
    info = soundfile.info(path)
    assert info.samplerate == 22050 and 1.0 < info.duration < 8.0
    mtime = path.stat().st_mtime_ns
    synthesize(SEED_SENTENCES[0], DEMO_SPEAKERS[0], path)
    assert path.stat().st_mtime_ns == mtime


def test_cloning_references_come_from_the_same_speaker():
    utts = [{"id": f"u{i}", "text": f"t{i}", "audio": f"u{i}.wav", "speaker": f"s{i % 3}"} for i in range(30)]
    rows = _manifest_rows(utts, clone_fraction=0.5, rng=random.Random(0))
    by_audio = {u["audio"]: u for u in utts}
    cloned = [r for r in rows if "ref_audio" in r]
    assert 5 < len(cloned) < 25 and len(rows) == 30
    for row in cloned:
        ref = by_audio[row["ref_audio"]]
        assert ref["speaker"] == row["speaker"] and ref["audio"] != row["audio"] and ref["text"] == row["ref_text"]
