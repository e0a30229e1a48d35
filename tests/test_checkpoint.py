"""Load -> export -> load round trips for the Boson and transformers layouts, Llama init."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import HiggsAudioV2ForConditionalGeneration, LlamaConfig, LlamaForCausalLM

from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.models.pretrained import config_from_checkpoint, from_pretrained, load_weights
from tests.model_utils import random_batch


@pytest.fixture
def model():
    torch.manual_seed(0)
    return HiggsAudioModel(tiny_config()).eval()


def _logits(m, batch):
    with torch.no_grad():
        out = m(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
        return m.text_logits(out.hidden_states), m.audio_logits(out.hidden_states[out.audio_out_mask])


def _assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    batch = random_batch(a.config, [[(2, 5, "in"), (9, 6, "out")]], seq_len=18)
    for x, y in zip(_logits(a, batch), _logits(b, batch), strict=True):
        assert torch.equal(x, y)


def test_boson_round_trip_sharded(model, tmp_path):
    save_checkpoint(model.state_dict(), model.config, tmp_path, layout="boson", max_shard_size="200KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "expected several shards"
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "higgs_audio" and cfg["use_delay_pattern"] and cfg["audio_num_codebooks"] == 8
    assert cfg["text_config"]["rope_parameters"]["rope_type"] == "llama3"
    loaded = from_pretrained(tmp_path)
    _assert_same_model(model, loaded)
    # and back out again: the second export is byte-for-byte the same tensors
    save_checkpoint(loaded.state_dict(), loaded.config, tmp_path / "again", layout="boson")
    _assert_same_model(model, from_pretrained(tmp_path / "again"))


def test_boson_split_weights_and_stray_keys_are_merged(model, tmp_path):
    save_checkpoint(model.state_dict(), model.config, tmp_path, layout="boson")
    from safetensors.torch import load_file

    sd = load_file(tmp_path / "model.safetensors")
    emb = sd.pop("embed_tokens.weight")
    sd["embed_tokens.embedding_frozen.weight"] = emb[:300].clone()
    sd["embed_tokens.embedding_trainable.weight"] = emb[300:].clone()
    head = sd.pop("audio_decoder_proj.text_lm_head.weight")
    sd["audio_decoder_proj.text_lm_head.linear_frozen.weight"] = head[:100].clone()
    sd["audio_decoder_proj.text_lm_head.linear_trainable.weight"] = head[100:].clone()
    sd["audio_codebook_weights"] = torch.ones(8) / 8
    sd["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(sd, tmp_path / "model.safetensors")
    _assert_same_model(model, from_pretrained(tmp_path))


def test_hf_export_loads_in_transformers_and_round_trips(model, tmp_path):
    save_checkpoint(model.state_dict(), model.config, tmp_path, layout="hf")
    port, info = HiggsAudioV2ForConditionalGeneration.from_pretrained(
        tmp_path, use_text_head=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert port.config.codebook_size == 1026
    torch.testing.assert_close(port.text_lm_head.weight, model.audio_decoder_proj.text_lm_head.weight)
    reloaded = from_pretrained(tmp_path)
    assert reloaded.config.audio_codebook_size == 1024
    _assert_same_model(model, reloaded)


def test_llama_init_copies_text_into_audio_and_matches_llama_on_text(tmp_path):
    torch.manual_seed(0)
    lcfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
    llama = LlamaForCausalLM(lcfg).eval()
    llama.save_pretrained(tmp_path)
    ids = dict(audio_in_token_idx=507, audio_out_token_idx=508, audio_out_bos_token_id=509,
               audio_eos_token_id=510, pad_token_id=511)
    cfg = config_from_checkpoint(tmp_path, ids)
    ours = HiggsAudioModel(cfg).eval()
    fresh_audio_head = ours.audio_decoder_proj.audio_lm_head.weight.clone()
    assert load_weights(ours, tmp_path) == "llama"
    layer = ours.layers[1]
    assert torch.equal(layer.audio_mlp.down_proj.weight, layer.mlp.down_proj.weight)
    assert torch.equal(layer.audio_input_layernorm.weight, layer.input_layernorm.weight)
    assert torch.equal(ours.audio_decoder_proj.audio_lm_head.weight, fresh_audio_head)
    text = torch.randint(0, 500, (2, 12))
    with torch.no_grad():
        out = ours(text, torch.zeros(0, 8, dtype=torch.long))
        torch.testing.assert_close(ours.text_logits(out.hidden_states), llama(text).logits, atol=1e-5, rtol=1e-5)


def test_shape_mismatch_names_the_tensor(model, tmp_path):
    save_checkpoint(model.state_dict(), model.config, tmp_path, layout="boson")
    other = HiggsAudioModel(tiny_config(intermediate_size=96))
    with pytest.raises(ValueError, match=r"layers\.0\..*mlp.*shape"):
        load_weights(other, tmp_path)


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)


def test_meta_read_gives_names_and_shapes_without_data(model, tmp_path):
    """Ranks that fill no weights under ZeRO-3 read only this (no tensor data from disk)."""
    from higgs_ds.models.checkpoint_files import read_state_dict

    save_checkpoint(model.state_dict(), model.config, tmp_path, layout="boson", max_shard_size="200KB")
    real, meta = read_state_dict(tmp_path), read_state_dict(tmp_path, meta=True)
    assert real.keys() == meta.keys()
    assert all(meta[k].device.type == "meta" and meta[k].shape == real[k].shape and meta[k].dtype == real[k].dtype
               for k in real)


def test_a_port_config_without_our_extra_ids_takes_them_from_the_tokenizer_or_says_what_to_pass(tmp_path):
    """transformers' port writes no audio_in_token_idx / audio_eos_token_id: never fall back to literal ids
    (128015 / 128012 lie outside a small vocabulary); take them from the tokenizer or fail naming them."""
    from higgs_ds.data.demo import demo_sentences
    from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
    from higgs_ds.models.higgs_v2.config import token_ids_from_tokenizer

    tokenizer = train_demo_tokenizer(demo_sentences()[:40], tmp_path / "tok", vocab_size=600)
    ids = token_ids_from_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = HiggsAudioModel(tiny_config(vocab_size=len(tokenizer), **ids)).eval()
    save_checkpoint(model.state_dict(), model.config, tmp_path / "port", layout="hf")
    cfg_path = tmp_path / "port" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["audio_in_token_idx"], cfg["audio_eos_token_id"]  # as transformers' own converter writes it
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"no audio_in_token_idx / audio_eos_token_id.*tokenizer"):
        from_pretrained(tmp_path / "port")
    tokenizer.save_pretrained(str(tmp_path / "port"))  # the checkpoint's own tokenizer supplies them
    loaded = from_pretrained(tmp_path / "port")
    assert loaded.config.audio_in_token_idx == ids["audio_in_token_idx"] < len(tokenizer)
    assert loaded.config.audio_eos_token_id == ids["audio_eos_token_id"]
    _assert_same_model(model, loaded)
    assert config_from_checkpoint(tmp_path / "port", ids).audio_in_token_idx == ids["audio_in_token_idx"]
