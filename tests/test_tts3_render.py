"""The Higgs TTS 3 prompt and labels, and its model training on a rendered batch."""


import numpy as np
import pytest

from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.schema import Utterance
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model
from higgs_ds.models.higgs_tts3.prompt import Tts3Renderer
from higgs_ds.models.loss import LossWeights, combine
from tests.tts3_utils import tiny_model_config, tiny_tts3_tokenizer

K, BOC, EOC, _ = 8, 1024, 1025, -100


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tts3_tokenizer()


def _collator(renderer):
    return renderer.collator(CollatorConfig(K, BOC, EOC))


def test_prompt_layout_and_labels(tokenizer):
    renderer = Tts3Renderer(tokenizer, K)
    sp = renderer.special
    codes, ref = np.arange(K * 5).reshape(K, 5) % 1000, np.full((K, 3), 7)
    utt = Utterance("u", "hello world <|happy|>", codes, ref_text="one two", ref_codes=ref)
    sample = renderer.render(utt)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert sample.input_ids == ([sp.tts, sp.ref_text, *enc("one two"), sp.ref_audio] + [sp.audio_in] * (3 + 7)
                                + [sp.text, *enc("hello world <|happy|>"), sp.audio] + [sp.audio_out] * (5 + 7))
    assert tokenizer.convert_tokens_to_ids("<|happy|>") in sample.input_ids  # a control tag stays one token
    assert set(sample.labels) == {_}  # no text loss

    zero_shot = renderer.render(Utterance("z", "hello", codes))
    assert zero_shot.input_ids[:2] == [sp.tts, sp.text] and sp.ref_audio not in zero_shot.input_ids

    batch = _collator(renderer)([sample, zero_shot])
    assert batch["audio_ids"].shape == (10 + 12 + 12, K)
    ref_rows = batch["audio_ids"][:10]
    assert ref_rows[0].tolist() == [7] + [BOC] * 7 and ref_rows[-1].tolist() == [EOC] * 7 + [7]
    labels = batch["audio_labels"][:13]  # sample 1: the <|audio|> row, then 12 target rows
    assert batch["audio_labels"].shape == (26, K)
    assert labels[0].tolist() == [_] * K
    assert labels[1].tolist() == [codes[0, 0]] + [_] * 7  # BOC targets masked
    assert labels[6].tolist() == [EOC] + [codes[k, 5 - k] for k in range(1, 6)] + [_, _]  # EOC trained
    assert labels[-1].tolist() == [EOC] * 7 + [codes[7, 4]]


def test_structural_tokens_in_text_are_rejected(tokenizer):
    with pytest.raises(ValueError, match="<|audio|>"):
        Tts3Renderer(tokenizer, K).render(Utterance("bad", "say <|audio|> now", np.zeros((K, 2), dtype=np.int64)))


def test_model_trains_on_rendered_batch(tokenizer):
    renderer = Tts3Renderer(tokenizer, K)
    utt = Utterance("u", "hello world", np.arange(K * 4).reshape(K, 4), ref_text="one", ref_codes=np.ones((K, 2)))
    batch = _collator(renderer)([renderer.render(utt)])
    model = HiggsTTS3Model(tiny_model_config(tokenizer))
    sums = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                 audio_labels=batch["audio_labels"]).loss_sums
    assert sums.audio_count.tolist() == [4 + 7 - k for k in range(K)] and sums.text_count.item() == 0
    combine(sums, LossWeights()).loss.backward()
    assert model.audio_table.weight.grad.abs().sum() > 0
