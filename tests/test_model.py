"""Model structure: config validation, audio embedding, fast-forward layers, module names."""

import pytest
import torch

from higgs_ds.models.higgs_v2.config import HiggsAudioConfig, tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from tests.model_utils import random_batch


def test_audio_embedding_is_sum_of_offset_codebook_rows():
    torch.manual_seed(0)
    model = HiggsAudioModel(tiny_config())
    codes = torch.tensor([[0, 1, 2, 3, 1024, 1025, 5, 6]])
    table = model.audio_codebook_embeddings.weight
    want = sum(table[k * 1026 + int(codes[0, k])] for k in range(8))
    torch.testing.assert_close(model.embed_audio(codes)[0], want)
    assert table.shape == (8 * 1026, 64)


def test_state_dict_uses_boson_names():
    keys = set(HiggsAudioModel(tiny_config()).state_dict())
    for k in ("embed_tokens.weight", "norm.weight", "audio_codebook_embeddings.weight",
              "audio_decoder_proj.text_lm_head.weight", "audio_decoder_proj.audio_lm_head.weight",
              "layers.1.audio_mlp.gate_proj.weight", "layers.1.audio_input_layernorm.weight",
              "layers.1.audio_post_attention_layernorm.weight", "layers.0.self_attn.k_proj.weight"):
        assert k in keys, k


def test_fast_forward_layers_pass_audio_through_and_hide_it_from_text():
    torch.manual_seed(0)
    cfg = tiny_config(num_hidden_layers=3, audio_dual_ffn_layers=[0, 2])
    model = HiggsAudioModel(cfg).eval()
    assert not hasattr(model.layers[1], "audio_mlp") and hasattr(model.layers[0], "audio_mlp")
    assert "layers.1.audio_mlp.gate_proj.weight" not in model.state_dict()
    batch = random_batch(cfg, [[(4, 6, "out")]], seq_len=16)
    layer = model.layers[1]
    h = torch.randn(1, 16, 64)
    audio = batch["input_ids"] == cfg.audio_out_token_idx
    full, text_only = model._attention_masks(torch.ones(1, 16, dtype=torch.bool), audio, 0)
    pos = model.rotary_emb(h, torch.arange(16)[None])
    with torch.no_grad():
        out = layer(h, audio, full, text_only, pos)
        h2 = h.clone()
        h2[audio] = torch.randn(int(audio.sum()), 64)  # change only the audio inputs
        out2 = layer(h2, audio, full, text_only, pos)
    torch.testing.assert_close(out[audio], h[audio])  # audio skips the layer
    torch.testing.assert_close(out[~audio], out2[~audio])  # text never attends to audio here


@pytest.mark.parametrize("bad, match", [
    (dict(audio_adapter_type="stack"), "audio_adapter_type"),
    (dict(audio_dual_ffn_layers=[0, 5]), "outside"),
    (dict(audio_stream_eos_id=1026), "audio_stream_eos_id"),
    (dict(audio_out_token_idx=10_000), "audio_out_token_idx"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**bad)


def test_rope_scaling_and_ids_come_from_the_config():
    d = tiny_config().to_boson_dict()
    d["text_config"]["rope_parameters"]["factor"] = 8.0
    d["audio_num_codebooks"] = 4
    cfg = HiggsAudioConfig.from_boson_dict(d)
    model = HiggsAudioModel(cfg)
    assert model.audio_codebook_embeddings.weight.shape[0] == 4 * 1026
    assert cfg.text_config.rope_parameters["factor"] == 8.0
    assert model.audio_decoder_proj.audio_lm_head(torch.randn(3, 64)).shape == (3, 4, 1026)
