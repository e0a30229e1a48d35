"""A tiny Higgs TTS 3 folder in the released layout: detected, loaded, written back bit for bit."""

import json

import pytest
import torch
from safetensors import safe_open

from higgs_ds.models import family_of, get_family
from higgs_ds.models.higgs_tts3.checkpoint import passthrough_tensors, save_checkpoint
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model
from higgs_ds.models.pretrained import checkpoint_state_dict, from_pretrained
from tests.tts3_utils import codec_tensors, write_tiny_tts3_folder


def _tensors(directory):
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return out


def test_released_folder_round_trips_bit_exactly(tmp_path):
    src = write_tiny_tts3_folder(tmp_path / "release")
    assert family_of(src) is get_family("higgs_tts3")
    model = from_pretrained(src, dtype=torch.bfloat16)
    assert isinstance(model, HiggsTTS3Model)
    assert model.config.audio_token_id == 2 and model.config.audio_out_token_idx == 301  # from the tokenizer
    assert model.rotary_emb.config.rope_parameters["rope_theta"] == 1e6  # null in config.json

    passthrough = passthrough_tensors(src)
    assert set(passthrough) == set(codec_tensors())
    out = save_checkpoint(model.state_dict(), model.config, tmp_path / "export", init=src)  # the codec: from src
    before, after = _tensors(src), _tensors(out)
    assert set(before) == set(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and after[name].shape == tensor.shape, name
        assert torch.equal(after[name].view(torch.uint8), tensor.view(torch.uint8)), name

    written = json.loads((out / "config.json").read_text())
    original = json.loads((src / "config.json").read_text())
    assert written["text_config"] == original["text_config"] and written["model_type"] == "higgs_multimodal_qwen3"
    assert {k: v for k, v in written.items() if k != "higgs_ds"} == original
    reloaded = from_pretrained(out, dtype=torch.bfloat16)  # the ids now come from config.json's higgs_ds entry
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_meta_read_and_wrong_tensors_raise(tmp_path):
    src = write_tiny_tts3_folder(tmp_path / "release")
    model = from_pretrained(src)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    sd, layout = checkpoint_state_dict(src, model.config, shapes, meta=True)
    assert layout == "released" and set(sd) == set(shapes) and all(t.is_meta for t in sd.values())

    tensors = _tensors(src)
    del tensors["tied.embedding.modality_embeddings.0.embedding.weight"]
    from safetensors.torch import save_file

    save_file(tensors, src / "model.safetensors")
    with pytest.raises(KeyError, match="modality_embeddings.0.embedding.weight"):
        from_pretrained(src)
