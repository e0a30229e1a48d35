"""The Higgs TTS 3 prompt and labels, and the label-leak guard on the TTS 3 model."""

import math

import numpy as np
import pytest
import torch

import higgs_ds.model.loss as loss_mod
from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.render_tts3 import Tts3Collator, Tts3Renderer
from higgs_ds.data.schema import Utterance
from higgs_ds.model.loss import LossWeights, combine
from higgs_ds.model.tts3 import HiggsTTS3Model
from tests.model_utils import mean_tail_audio_loss
from tests.tts3_utils import tiny_model_config, tiny_tts3_tokenizer

K, BOC, EOC, _ = 8, 1024, 1025, -100


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tts3_tokenizer()


def _collator(renderer):
    return Tts3Collator(renderer.special, CollatorConfig(K, BOC, EOC))


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


def _train_audio_loss(steps=120, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_model_config(tiny_tts3_tokenizer())
    b, rows = 4, 48
    ids = torch.tensor([[cfg.audio_token_id] + [cfg.audio_out_token_idx] * rows] * b)

    def step_parts(model, g):
        codes = torch.randint(0, cfg.audio_codebook_size, (b, rows, K), generator=g)
        audio_labels = torch.cat([torch.full((b, 1, K), _), codes], dim=1).view(-1, K)  # <|audio|> row first
        out = model(ids, codes.view(-1, K), labels=torch.full_like(ids, _), audio_labels=audio_labels)
        return combine(out.loss_sums, LossWeights())

    return mean_tail_audio_loss(HiggsTTS3Model(cfg), step_parts, steps, seed)


def test_shifted_audio_loss_stays_at_chance_on_random_codes():
    assert _train_audio_loss() > math.log(1024) - 0.1


def test_guard_catches_the_unshifted_loss(monkeypatch):
    monkeypatch.setattr(loss_mod, "shifted_targets", lambda labels, audio_labels, mask: (labels, audio_labels))
    assert _train_audio_loss() < math.log(1024) - 1.0
