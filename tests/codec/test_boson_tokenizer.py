"""Boson's original tokenizer folder (config.json + model.pth) converted on load into transformers' model."""

import json
import shutil

import pytest
import torch

from higgs_ds.codec.base import CodecLoadError
from higgs_ds.codec.boson_tokenizer import (
    is_boson_tokenizer_dir,
    load_boson_tokenizer,
    save_boson_tokenizer,
)
from tests.codec.tiny_tokenizer import build_tiny_higgs_tokenizer, save_tiny_higgs_tokenizer


@pytest.fixture(scope="module")
def reference():
    """The tiny tokenizer, 1.2 s of audio, and its codes and decoded audio."""
    model = build_tiny_higgs_tokenizer(seed=0)
    audio = 0.3 * torch.randn(1, 1, 28800, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = model.encode(audio, return_dict=False)
        decoded = model.decode(codes, return_dict=False)
    return model, audio, codes, decoded


@pytest.fixture(scope="module")
def boson_dir(reference, tmp_path_factory):
    return save_boson_tokenizer(reference[0], tmp_path_factory.mktemp("boson") / "tokenizer")


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def edit_checkpoint(folder, edit):
    state = torch.load(folder / "model.pth", weights_only=True)
    edit(state)
    torch.save(state, folder / "model.pth")


def assert_same_tokenizer(model, reference):
    _, audio, codes, decoded = reference
    with torch.no_grad():
        assert torch.equal(model.encode(audio, return_dict=False), codes)
        torch.testing.assert_close(model.decode(codes, return_dict=False), decoded, rtol=0, atol=1e-6)


def test_converted_model_gives_the_same_codes_and_audio(reference, boson_dir):
    codes = reference[2]
    assert codes.shape == (1, 8, 30)  # 28800 / 960 frames of 8 codebooks
    assert all(len(row.unique()) > 3 for row in codes[0]), "random codebooks should give varied codes"
    assert is_boson_tokenizer_dir(boson_dir)
    model = load_boson_tokenizer(boson_dir)
    assert not model.training
    assert (model.config.hop_length, model.config.num_quantizers) == (960, 8)
    original = reference[0].state_dict()
    assert all(torch.equal(value, original[key]) for key, value in model.state_dict().items())
    assert_same_tokenizer(model, reference)


def test_hubert_weights_from_a_separate_folder(reference, tmp_path):
    folder = save_boson_tokenizer(reference[0], tmp_path / "tok", hubert_in_checkpoint=False)
    assert not any(k.startswith("semantic_model.") for k in torch.load(folder / "model.pth", weights_only=True))
    assert_same_tokenizer(load_boson_tokenizer(folder), reference)  # from tok/hubert_base/
    moved = shutil.move(folder / "hubert_base", tmp_path / "my_hubert")
    assert_same_tokenizer(load_boson_tokenizer(folder, semantic_model_path=moved), reference)


def test_hubert_weight_norm_as_g_and_v(reference, boson_dir, tmp_path):
    """Older torch saves HuBERT's positional conv as weight_g/weight_v rather than a parametrization."""
    folder = copy_of(boson_dir, tmp_path)
    prefix = "semantic_model.encoder.pos_conv_embed.conv."

    def to_g_v(state):
        state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
        state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")

    edit_checkpoint(folder, to_g_v)
    assert_same_tokenizer(load_boson_tokenizer(folder), reference)


def test_checkpoint_uses_boson_names(boson_dir):
    keys = set(torch.load(boson_dir / "model.pth", weights_only=True))
    # Names as Boson's modules give them: DAC Encoder/Decoder nn.Sequential indices (5 strides: 0 = first
    # conv, 1-5 = blocks, 6 = snake, 7 = last conv), weight norm g/v, the quantizer's `vq.layers.N._codebook`.
    for key in ["encoder.block.0.weight_g", "encoder.block.1.block.0.block.1.weight_v", "encoder.block.5.block.3.alpha",
                "encoder.block.5.block.4.weight_g", "encoder.block.6.alpha", "encoder.block.7.bias",
                "decoder_2.model.0.weight_v", "decoder_2.model.1.block.1.weight_g",
                "decoder_2.model.5.block.4.block.3.weight_v", "decoder_2.model.6.alpha", "decoder_2.model.7.weight_g",
                "quantizer.vq.layers.7._codebook.embed", "quantizer.vq.layers.0.project_in.weight",
                "fc_prior.weight", "fc_post1.bias", "fc_post2.weight", "encoder_semantic.conv.conv.weight",
                "encoder_semantic.conv_blocks.1.res_units.0.conv2.weight", "decoder_semantic.conv2.conv.weight",
                "semantic_model.encoder.layers.0.attention.q_proj.weight"]:
        assert key in keys, key
    dac = [k for k in keys if k.startswith(("encoder.", "decoder_2."))]
    assert not any(k.endswith(".weight") for k in dac), "Boson's DAC convolutions are all weight-normed"
    assert not any(k.startswith(("acoustic_", "quantizer.quantizers", "fc.", "fc1.", "fc2.")) for k in keys)
    config = json.loads((boson_dir / "config.json").read_text())
    assert (config["ratios"], config["n_q"], config["bins"]) == ([8, 5, 4, 2, 3], 8, 1024)


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("quantizer.vq.layers.3._codebook.embed"), "missing: ['quantizer.vq.layers.3._codebook.embed']"),
    (lambda s: s.pop("decoder_2.model.1.block.1.weight_g"), "decoder_2.model.1.block.1.weight_v has no"),
    (lambda s: s.update({"fc_post2.weight": torch.zeros(3, 3)}), "wrong shape: ['fc_post2.weight (3, 3)"),
    (lambda s: s.update({"encoder.block.9.bias": torch.zeros(1)}), "no transformers name: ['encoder.block.9.bias']"),
    (lambda s: s.update({"quantizer.vq.layers.8._codebook.embed": torch.zeros(1)}),
     "unexpected: ['quantizer.vq.layers.8._codebook.embed']"),
])
def test_a_checkpoint_that_does_not_fit_names_the_key(boson_dir, tmp_path, edit, named):
    folder = copy_of(boson_dir, tmp_path)
    edit_checkpoint(folder, edit)
    with pytest.raises(CodecLoadError, match="model.pth") as error:
        load_boson_tokenizer(folder)
    assert named in str(error.value)


@pytest.mark.parametrize("change, named", [
    ({"vq_scale": 2}, "vq_scale=2"),
    ({"n_q": 4}, "n_q=4"),
    ({"decoder_dim": 8}, "['decoder_dim']"),
])
def test_config_it_cannot_express_is_named(boson_dir, tmp_path, change, named):
    folder = copy_of(boson_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CodecLoadError, match="config.json") as error:
        load_boson_tokenizer(folder)
    assert named in str(error.value)


def test_missing_hubert_says_what_to_pass(reference, tmp_path):
    folder = save_boson_tokenizer(reference[0], tmp_path / "tok", hubert_in_checkpoint=False)
    (folder / "hubert_base" / "model.safetensors").unlink()
    with pytest.raises(CodecLoadError, match="HuBERT folder has no weights"):
        load_boson_tokenizer(folder)
    shutil.rmtree(folder / "hubert_base")
    with pytest.raises(CodecLoadError, match="semantic_model_path=") as error:
        load_boson_tokenizer(folder)
    assert "hubert_base" in str(error.value)


def test_transformers_folder_is_not_boson(tmp_path):
    folder = save_tiny_higgs_tokenizer(tmp_path / "hf")
    assert not is_boson_tokenizer_dir(folder)
    torch.save({}, folder / "model.pth")  # a stray model.pth does not make it Boson's
    assert not is_boson_tokenizer_dir(folder)
