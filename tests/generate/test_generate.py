"""Generation end to end on CPU: KV-cache decoding, the overfit model reproducing its training codes,
batching, and the command line writing a wav whose length matches the codes."""


import numpy as np
import pytest
import soundfile
import torch
from transformers import DynamicCache

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER, read_spec
from higgs_ds.codec import CodecConfig, load_codec
from higgs_ds.data.demo import build_seeded_demo_dac
from higgs_ds.data.schema import PromptConfig
from higgs_ds.inference import GenerationConfig, TTSRequest, build_prompt, generate, left_pad, load_model
from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.run_dir import write_run_extras
from launch import generate as generate_cli
from tests.generate.conftest import model_config_for

GREEDY = GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=60)


def _requests(utts):
    return [TTSRequest(u.text, scene=u.scene, ref_text=u.ref_text, ref_codes=u.ref_codes, id=u.id) for u in utts]


def test_kv_cache_decoding_matches_the_full_forward_with_left_padding(overfit):
    """Prefill + one-position steps (past_len > 0) give the hidden states of one full forward."""
    torch.manual_seed(0)
    model = HiggsAudioModel(model_config_for(overfit.tokenizer)).eval()
    mcfg = model.config
    batch = left_pad([build_prompt(overfit.renderer, r, mcfg.audio_stream_bos_id, mcfg.audio_stream_eos_id)
                      for r in _requests(overfit.utterances)],
                     overfit.renderer.special.pad)
    ids, mask, audio = batch["input_ids"], batch["attention_mask"], batch["audio_ids"]
    out_id = model.config.audio_out_token_idx
    extra = torch.randint(0, 1024, (2 * 3, 8))  # three more audio-out columns per row
    full_ids = torch.cat([ids, torch.full((2, 3), out_id)], 1)
    full_mask = torch.cat([mask, torch.ones(2, 3, dtype=mask.dtype)], 1)
    # row-major audio order: row 0's prompt audio, row 0's new columns, then row 1's
    n0 = int(((ids[0] == out_id) | (ids[0] == model.config.audio_in_token_idx)).sum())
    full_audio = torch.cat([audio[:n0], extra[0::2], audio[n0:], extra[1::2]])
    with torch.no_grad():
        full = model(full_ids, full_audio, full_mask).hidden_states
        cache = DynamicCache()
        steps = [model(ids, audio, mask, past_key_values=cache).hidden_states]
        for t in range(3):
            mask_so_far = full_mask[:, : ids.shape[1] + t + 1]
            steps.append(model(torch.full((2, 1), out_id), extra[2 * t: 2 * t + 2], mask_so_far,
                               past_key_values=cache).hidden_states)
    real = full_mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], atol=1e-5, rtol=1e-5)


def test_greedy_decoding_of_the_overfit_model_reproduces_its_training_codes(overfit):
    batched = generate(overfit.model, overfit.renderer, _requests(overfit.utterances), GREEDY)
    assert batched.finished == [True, True]
    # one forward per sampled column: T + K (the all-BOS column is part of the prompt)
    assert batched.steps == max(u.codes.shape[1] for u in overfit.utterances) + 8
    for utt, codes, delayed in zip(overfit.utterances, batched.codes, batched.delayed, strict=True):
        assert np.array_equal(codes.numpy(), utt.codes), utt.id
        assert delayed.shape[1] == utt.codes.shape[1] + 8 + 1 and (delayed[:, -1] == 1025).all()
    for i, request in enumerate(_requests(overfit.utterances)):  # alone == in a left-padded batch
        single = generate(overfit.model, overfit.renderer, [request], GREEDY)
        assert torch.equal(single.delayed[0], batched.delayed[i])


def test_top_k_1_sampling_equals_greedy_and_max_length_truncates(overfit):
    request = _requests(overfit.utterances)[:1]
    sampled = generate(overfit.model, overfit.renderer, request, GenerationConfig(top_k=1, seed=0, ras_window=0))
    assert np.array_equal(sampled.codes[0].numpy(), overfit.utterances[0].codes)
    short = generate(overfit.model, overfit.renderer, request, GenerationConfig(temperature=0, ras_window=0,
                                                                                max_new_frames=10))
    assert short.finished == [False] and short.delayed[0].shape[1] == 11
    assert np.array_equal(short.codes[0].numpy(), overfit.utterances[0].codes[:, : 11 - 8])


def test_cli_writes_wav_and_codes_whose_lengths_agree(overfit, exported, tmp_path):
    ckpt, codec_path = exported
    utt = overfit.utterances[1]
    ref_codes = tmp_path / "ref.npy"
    np.save(ref_codes, utt.ref_codes)
    out = tmp_path / "out" / "speech.wav"
    paths = generate_cli.main([str(ckpt), "--text", utt.text, "--text", overfit.utterances[0].text,
                               "--scene", utt.scene, "--ref-codes", str(ref_codes), "--ref-text", utt.ref_text,
                               "--out", str(out), "--greedy", "--max-new-frames", "40"])  # codec: from the spec
    assert paths == [out.with_name("speech_0.wav"), out.with_name("speech_1.wav")]
    codec = load_codec(CodecConfig(path=str(codec_path), device="cpu"))
    hop = int(codec.spec.samples_per_frame)
    codes = np.load(paths[0].with_suffix(".npy"))
    assert np.array_equal(codes, utt.codes)  # cloned prompt, rendered as in training
    for path in paths:
        wav, sr = soundfile.read(path)
        frames = np.load(path.with_suffix(".npy")).shape[1]
        assert sr == codec.sample_rate and frames > 0 and len(wav) == frames * hop
        assert np.abs(wav).max() > 0


def test_load_model_reads_exported_dirs_with_their_tokenizer(exported, overfit):
    loaded = load_model(exported[0])
    assert loaded.tokenizer_dir == exported[0]
    for name, p in overfit.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], p), name


def test_generation_keeps_the_training_prompt_and_checks_the_codec(overfit, exported, tmp_path):
    ckpt, codec_path = exported
    loaded = load_model(ckpt)
    assert loaded.audio_spec == read_spec(ckpt) and loaded.prompt == PromptConfig()
    custom = PromptConfig(system_prompt="حول النص إلى كلام.", use_scene=False)
    write_run_extras(ckpt, loaded.audio_spec, custom)
    try:
        assert load_model(ckpt).prompt == custom  # what launch/generate.py renders with
    finally:
        write_run_extras(ckpt, loaded.audio_spec, PromptConfig())
    other = build_seeded_demo_dac(tmp_path / "other.pth", seed=1)  # same shapes, other weights
    with pytest.raises(ValueError, match="codec_sha256"):
        generate_cli.main([str(ckpt), "--text", overfit.utterances[0].text, "--codec-path", str(other),
                           "--out", str(tmp_path / "x.wav"), "--greedy", "--max-new-frames", "5"])


def test_a_released_checkpoint_without_spec_means_the_higgs_tokenizer(overfit, tmp_path):
    save_checkpoint(overfit.model.state_dict(), overfit.model.config, tmp_path, layout="hf")
    overfit.tokenizer.save_pretrained(str(tmp_path))
    assert load_model(tmp_path).audio_spec == HIGGS_AUDIO_TOKENIZER
