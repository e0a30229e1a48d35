"""The released Higgs Audio v2 3B shape, checked without its weights: built on the meta device, our parameter
count and state-dict names must be those of the released checkpoint (Boson's names) and of transformers'
port (`HiggsAudioV2ForConditionalGeneration`)."""

import torch
from transformers import HiggsAudioV2ForConditionalGeneration

from higgs_ds.models import get_family
from higgs_ds.models.higgs_v2.checkpoint import ours_to_hf
from higgs_ds.models.higgs_v2.config import HiggsAudioConfig
from higgs_ds.models.higgs_v2.model import HiggsAudioModel

LAYERS, HIDDEN, FFN, VOCAB, KV = 28, 3072, 8192, 128256, 1024


def released_config() -> HiggsAudioConfig:
    """The family's released shape: Llama-3.2-3B backbone + DualFFN in all 28 layers, 8 x (1024 + 2) codes."""
    cfg = get_family("higgs_v2_dualffn").released_config()
    text = cfg.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.vocab_size) == (LAYERS, HIDDEN, FFN,
                                                                                                 VOCAB)
    return cfg


def released_key_shapes() -> dict[str, tuple[int, ...]]:
    """The released checkpoint's key list (Boson's `HiggsAudioModel` names) with their shapes."""
    audio_rows = 8 * 1026
    keys = {"embed_tokens.weight": (VOCAB, HIDDEN), "norm.weight": (HIDDEN,),
            "audio_codebook_embeddings.weight": (audio_rows, HIDDEN),
            "audio_decoder_proj.text_lm_head.weight": (VOCAB, HIDDEN),
            "audio_decoder_proj.audio_lm_head.weight": (audio_rows, HIDDEN)}
    for i in range(LAYERS):
        p = f"layers.{i}."
        keys.update({p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                     p + "self_attn.k_proj.weight": (KV, HIDDEN), p + "self_attn.v_proj.weight": (KV, HIDDEN)})
        for mlp in ("mlp", "audio_mlp"):
            keys.update({f"{p}{mlp}.gate_proj.weight": (FFN, HIDDEN), f"{p}{mlp}.up_proj.weight": (FFN, HIDDEN),
                         f"{p}{mlp}.down_proj.weight": (HIDDEN, FFN)})
        for norm in ("input_layernorm", "post_attention_layernorm", "audio_input_layernorm",
                     "audio_post_attention_layernorm"):
            keys[f"{p}{norm}.weight"] = (HIDDEN,)
    return keys


def test_released_3b_shape_parameter_count_and_names():
    cfg = released_config()
    with torch.device("meta"):
        ours = HiggsAudioModel(cfg)
    params = {name: tuple(p.shape) for name, p in ours.named_parameters()}
    assert params == released_key_shapes()
    total = sum(p.numel() for p in ours.parameters())
    per_layer = 2 * HIDDEN * HIDDEN + 2 * KV * HIDDEN + 2 * 3 * HIDDEN * FFN + 4 * HIDDEN
    assert total == LAYERS * per_layer + 2 * VOCAB * HIDDEN + 2 * 8 * 1026 * HIDDEN + HIDDEN
    assert 5.76e9 < total < 5.78e9  # "3.6B LLM + 2.2B audio adapter"
    assert set(ours.state_dict()) == set(params)  # no persistent buffer leaks into checkpoints

    with torch.device("meta"):
        port = HiggsAudioV2ForConditionalGeneration(cfg.to_hf_port_config(), use_text_head=True)
    port_shapes = {name: tuple(p.shape) for name, p in port.named_parameters()}
    mapped = {name: tuple(t.shape) for name, t in ours_to_hf(dict(ours.named_parameters())).items()}
    assert mapped == port_shapes
