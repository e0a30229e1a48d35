"""The released Higgs TTS 3 shape, on the meta device. (Logits against transformers' Qwen3Model plus the
fused audio table run for every family in tests/families/test_family_contract.py.)"""

import torch

from higgs_ds.models.higgs_tts3.config import released_tts3_config
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model

ROWS = 1026  # codes per codebook table: 1024 codes, BOC, EOC


RELEASED_NAMES = {"tied.embedding.text_embedding.weight": (151936, 2560), "body.norm.weight": (2560,),
                  "tied.embedding.modality_embeddings.0.embedding.weight": (8208, 2560)}
LAYER_SHAPES = {"self_attn.q_proj.weight": (4096, 2560), "self_attn.k_proj.weight": (1024, 2560),
                "self_attn.v_proj.weight": (1024, 2560), "self_attn.o_proj.weight": (2560, 4096),
                "self_attn.q_norm.weight": (128,), "self_attn.k_norm.weight": (128,),
                "mlp.gate_proj.weight": (9728, 2560), "mlp.up_proj.weight": (9728, 2560),
                "mlp.down_proj.weight": (2560, 9728), "input_layernorm.weight": (2560,),
                "post_attention_layernorm.weight": (2560,)}


def test_released_shape_on_meta():
    from higgs_ds.models.higgs_tts3.checkpoint import ours_to_released

    with torch.device("meta"):
        model = HiggsTTS3Model(released_tts3_config())
    assert sum(p.numel() for p in model.parameters()) == 4_043_480_576
    names = {k: tuple(v.shape) for k, v in ours_to_released(model.state_dict()).items()}
    want = dict(RELEASED_NAMES)
    want.update({f"body.layers.{i}.{k}": s for i in range(36) for k, s in LAYER_SHAPES.items()})
    assert names == want
    rope = model.rotary_emb
    assert rope.config.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}
    assert not model.layers[0].self_attn.q_proj.bias and model.config.text_config.rms_norm_eps == 1e-6
