"""Greedy codes from our decoder equal `HiggsAudioV2ForConditionalGeneration.generate`'s, same weights
and prompt.

How the port's inputs map to ours (see docs/generation.md, "Agreement with transformers"):
- prompt: our prompt without its last position (the all-BOS column): the port's first step is a
  forward at `<|audio_out_bos|>` whose audio-head output it forces to all-BOS, then feeds it back;
- prompt audio: our delayed prompt segments as `audio_input_ids` [1, N, K] (every audio position uses
  the port's one placeholder id, `<|AUDIO_OUT|>`, as our voice-cloning reference already does);
- the port marks post-EOS text positions with `audio_delay_token_id` (default 128014, outside the
  tiny vocabulary): here it is set to `<|recipient|>`, an id no prompt contains; `eos_token_id` is
  `<|eot_id|>`;
- EOS: the port forces the diagonal from row 0 after the first EOS, upstream (and we) from the first
  EOS row e; the two agree whenever the first EOS is in row 0, as for any model trained on the
  delay pattern. Repetition-aware sampling is off (the port draws it at random even when greedy).
"""

import pytest
import torch
from transformers import HiggsAudioV2ForConditionalGeneration

from higgs_ds.inference import GenerationConfig, TTSRequest, build_prompt, generate
from higgs_ds.models.higgs_v2.checkpoint import ours_to_hf
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from tests.generate.conftest import model_config_for


def _port(model, special):
    cfg = model.config.to_hf_port_config()
    cfg.audio_delay_token_id = special.recipient
    cfg.eos_token_id = special.eot
    port = HiggsAudioV2ForConditionalGeneration(cfg, use_text_head=True).eval()
    result = port.load_state_dict(ours_to_hf(model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return port


def _port_generate(port, renderer, request, max_new_tokens):
    prompt = build_prompt(renderer, request, port.config.audio_stream_bos_id, port.config.audio_stream_eos_id)
    input_ids = torch.tensor([prompt.input_ids[:-1]])  # up to <|audio_out_bos|>
    prompt_audio = prompt.audio_ids[:-1]
    kwargs = {}
    if len(prompt_audio):
        kwargs = dict(audio_input_ids=prompt_audio[None], audio_input_ids_mask=torch.ones(1, len(prompt_audio),
                                                                                          dtype=torch.bool))
    with torch.no_grad():
        out = port.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                            max_new_tokens=max_new_tokens, eos_token_id=renderer.special.eot,
                            pad_token_id=renderer.special.pad, return_dict_in_generate=True, **kwargs)
    return out.audio_sequences[0, len(prompt_audio):].T  # [K, L]: the generated delayed segment


def _requests(utts):
    return [TTSRequest(u.text, scene=u.scene, ref_text=u.ref_text, ref_codes=u.ref_codes, id=u.id) for u in utts]


def test_trained_model_codes_equal_transformers_generate_including_the_stop(overfit):
    port = _port(overfit.model, overfit.renderer.special)
    ours = generate(overfit.model, overfit.renderer, _requests(overfit.utterances),
                    GenerationConfig(temperature=0, ras_window=0, max_new_frames=60))
    assert ours.finished == [True, True]
    for request, delayed in zip(_requests(overfit.utterances), ours.delayed, strict=True):
        theirs = _port_generate(port, overfit.renderer, request, max_new_tokens=61)
        assert torch.equal(theirs, delayed), request.id


@pytest.mark.parametrize("seed", [0, 1])
def test_untrained_model_codes_equal_transformers_generate_to_max_length(overfit, seed):
    """Random weights, with the stream BOS/EOS rows of the audio head zeroed so neither is ever the
    argmax: both decoders run the full length through the KV cache and must agree code for code."""
    torch.manual_seed(seed)
    model = HiggsAudioModel(model_config_for(overfit.tokenizer, num_hidden_layers=3)).eval()
    rows = model.config.codebook_rows
    with torch.no_grad():
        head = model.audio_decoder_proj.audio_lm_head.weight.view(8, rows, -1)
        head[:, model.config.audio_stream_bos_id] = 0
        head[:, model.config.audio_stream_eos_id] = 0
    port = _port(model, overfit.renderer.special)
    frames = 24
    ours = generate(model, overfit.renderer, _requests(overfit.utterances),
                    GenerationConfig(temperature=0, ras_window=0, max_new_frames=frames))
    assert ours.finished == [False, False]
    for request, delayed in zip(_requests(overfit.utterances), ours.delayed, strict=True):
        theirs = _port_generate(port, overfit.renderer, request, max_new_tokens=frames + 1)
        assert theirs.shape == delayed.shape == (8, frames + 1)
        assert torch.equal(theirs, delayed), request.id
