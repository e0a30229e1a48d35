import numpy as np
import pytest
import torch

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import IGNORE_INDEX, delay_segment_input
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer, SpecialTokens
from higgs_ds.data.schema import (
    AudioContent,
    ChatMLSample,
    Message,
    PromptConfig,
    TextContent,
    Utterance,
    utterance_to_chatml,
)
from tests.data.synthetic import SPEC

K = SPEC.num_codebooks


def _codes(frames, seed=0):
    return np.random.default_rng(seed).integers(0, 1024, (K, frames))


def _trained_tokens(tokenizer, sample):
    return [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]


def test_special_tokens_come_from_tokenizer(tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    assert sp.audio_out == tokenizer.convert_tokens_to_ids("<|AUDIO_OUT|>")
    assert sp.pad == tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    with pytest.raises(ValueError, match="lacks the Higgs Audio special tokens"):
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast
        SpecialTokens.from_tokenizer(PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()),
                                                             unk_token="<unk>"))


def test_tts_render_layout_and_labels(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    sp = renderer.special
    utt = Utterance(id="a", text="الطقس اليوم مشمس", codes=_codes(5), scene="quiet room")
    out = renderer(utterance_to_chatml(utt))
    text = tokenizer.decode([t for t in out.input_ids if t != sp.audio_out])
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nGenerate audio following "
                    "instruction.\n\n<|scene_desc_start|>\nquiet room\n<|scene_desc_end|><|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nالطقس اليوم مشمس<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|><|audio_eos|><|eot_id|>")
    assert out.input_ids.count(sp.audio_out) == 5 + K + 1
    # Only the assistant's <|audio_out_bos|>, <|audio_eos|> and <|eot_id|> are text targets.
    assert _trained_tokens(tokenizer, out) == [sp.audio_out_bos, sp.audio_eos, sp.eot]
    assert len(out.input_ids) == len(out.labels)
    assert len(out.segments) == 1 and out.segments[0].is_output and out.segments[0].trained


def test_assistant_text_trained_user_and_system_masked(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    sp = renderer.special
    sample = ChatMLSample([
        Message("system", [TextContent("sys")]),
        Message("user", [TextContent("سؤال"), AudioContent(_codes(3))]),
        Message("assistant", [TextContent("جواب")]),
        Message("assistant", [AudioContent(_codes(4))]),
    ])
    out = renderer(sample)
    answer = tokenizer.encode("جواب", add_special_tokens=False)
    assert _trained_tokens(tokenizer, out) == answer + [sp.eom, sp.audio_out_bos, sp.audio_eos, sp.eot]
    # User audio is audio-in: <|audio_bos|><|AUDIO|>x(T+K+1)<|audio_eos|>, all masked.
    assert out.input_ids.count(sp.audio_in) == 3 + K + 1 and sp.audio_bos in out.input_ids
    assert [s.is_output for s in out.segments] == [False, True]


def test_voice_cloning_reference_not_trained_unless_asked(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    sp = renderer.special
    utt = Utterance(id="v", text="نص الهدف", codes=_codes(6, 1), ref_text="نص المرجع", ref_codes=_codes(4, 2))
    masked = renderer(utterance_to_chatml(utt))
    assert [(s.is_output, s.trained) for s in masked.segments] == [(True, False), (True, True)]
    assert _trained_tokens(tokenizer, masked) == [sp.audio_out_bos, sp.audio_eos, sp.eot]
    trained = renderer(utterance_to_chatml(utt, PromptConfig(train_reference_audio=True)))
    assert [s.trained for s in trained.segments] == [True, True]
    assert _trained_tokens(tokenizer, trained) == [sp.audio_out_bos, sp.audio_eos, sp.eot] * 2


def test_collate_contract(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    sp = renderer.special
    cloned = Utterance(id="v", text="نص", codes=_codes(6, 1), ref_text="مرجع", ref_codes=_codes(4, 2))
    plain = Utterance(id="p", text="نص آخر أطول قليلا", codes=_codes(3, 3))
    samples = [renderer(utterance_to_chatml(cloned)), renderer(utterance_to_chatml(plain))]
    batch = Collator(sp.pad, CollatorConfig.from_spec(SPEC, pad_to_multiple_of=8))(samples)
    b, s = batch["input_ids"].shape
    assert b == 2 and s % 8 == 0 and s >= max(len(x) for x in samples)
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["attention_mask"].sum(1).tolist() == [len(x) for x in samples]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == sp.pad).all() and (batch["labels"][pad] == IGNORE_INDEX).all()
    audio_pos = (batch["input_ids"] == sp.audio_out) | (batch["input_ids"] == sp.audio_in)
    assert (batch["labels"][audio_pos] == IGNORE_INDEX).all()
    # audio_ids: one row per audio position, row-major, delayed per segment.
    assert batch["audio_ids"].shape == (int(audio_pos.sum()), K)
    segments = (cloned.ref_codes, cloned.codes, plain.codes)
    expected = torch.cat([delay_segment_input(torch.as_tensor(c), SPEC.stream_bos, SPEC.stream_eos).T
                          for c in segments])
    assert torch.equal(batch["audio_ids"], expected)
    assert batch["audio_ids"][0].tolist() == [SPEC.stream_bos] * K
    # audio_labels: all audio-out rows; the reference segment is all -100, targets end in EOS.
    assert batch["audio_labels"].shape == (int((batch["input_ids"] == sp.audio_out).sum()), K)
    ref_rows = 4 + K + 1
    assert (batch["audio_labels"][:ref_rows] == IGNORE_INDEX).all()
    target = batch["audio_labels"][ref_rows:ref_rows + 6 + K + 1]
    assert (target[0] == IGNORE_INDEX).all() and (target == SPEC.stream_eos).sum() == K
    assert torch.equal(target[1:7, 0], torch.as_tensor(cloned.codes[0]))


def test_text_only_batch_has_empty_audio_tensors(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    sample = ChatMLSample([Message("user", [TextContent("مرحبا")]), Message("assistant", [TextContent("أهلا")])])
    batch = renderer.collator(CollatorConfig.from_spec(SPEC))([renderer(sample)])
    assert batch["audio_ids"].shape == (0, K) and batch["audio_labels"].shape == (0, K)


@pytest.mark.parametrize("token", ["<|AUDIO_OUT|>", "<|eot_id|>", "<|start_header_id|>"])
def test_special_token_text_in_a_transcript_is_rejected(tokenizer, token):
    renderer = ChatMLRenderer(tokenizer, K)
    utt = Utterance(id="a", text=f"نص {token} نص", codes=_codes(5))
    with pytest.raises(ValueError, match=r"special token.*" + token.replace("|", r"\|")):
        renderer(utterance_to_chatml(utt))


def test_scene_markers_stay_special_in_the_system_prompt(tokenizer):
    renderer = ChatMLRenderer(tokenizer, K)
    out = renderer(utterance_to_chatml(Utterance(id="a", text="نص", codes=_codes(3), scene="quiet")))
    assert renderer.special.scene_desc_start in out.input_ids and renderer.special.scene_desc_end in out.input_ids
