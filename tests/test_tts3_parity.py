"""Higgs TTS 3 against transformers' Qwen3Model plus the fused audio embedding/head written out here;
and the released shape, on the meta device."""

import torch
from transformers import Qwen3Model

from higgs_ds.model.tts3 import HiggsTTS3Model
from higgs_ds.model.tts3_config import released_tts3_config, tiny_tts3_config

ROWS = 1026  # codes per codebook table: 1024 codes, BOC, EOC


def _prompt(cfg, g, text_len, target_rows, ref_rows=0):
    """`<|tts|> [ref text, ref rows] <|text|> text <|audio|> target rows` with arbitrary text ids."""
    text = lambda n: torch.randint(0, cfg.vocab_size - 8, (n,), generator=g).tolist()  # noqa: E731
    ids = text(1)
    if ref_rows:
        ids += text(4) + [cfg.audio_in_token_idx] * ref_rows
    ids += text(text_len) + [cfg.audio_token_id] + [cfg.audio_out_token_idx] * target_rows
    return ids


def _reference_logits(qwen, table, cfg, input_ids, audio_ids, attention_mask):
    """The release's math: audio rows replace the text embedding by sum_c W[c*C + code_c]; the head is
    linear(final_norm(h), W) viewed as [.., K, C]."""
    embeds = qwen.embed_tokens(input_ids)
    is_audio = (input_ids == cfg.audio_in_token_idx) | (input_ids == cfg.audio_out_token_idx)
    fused = audio_ids + torch.arange(cfg.audio_num_codebooks) * ROWS
    embeds[is_audio] = table[fused].sum(dim=1)
    hidden = qwen(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    return (hidden @ table.T).view(*hidden.shape[:-1], cfg.audio_num_codebooks, ROWS)


def test_logits_match_qwen3_plus_fused_audio_table_fp32():
    torch.manual_seed(0)
    cfg = tiny_tts3_config(num_hidden_layers=3)
    qwen = Qwen3Model(cfg.text_config).eval()
    with torch.no_grad():
        for p in qwen.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms away from 1, so a missing norm shows
    table = torch.randn(cfg.audio_num_codebooks * ROWS, cfg.hidden_size) * 0.05
    ours = HiggsTTS3Model(cfg).eval()
    state = {**qwen.state_dict(), "audio_table.weight": table}
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    g = torch.Generator().manual_seed(1)
    rows = [_prompt(cfg, g, 6, 12), _prompt(cfg, g, 5, 9, ref_rows=10)]  # zero-shot, and with a reference clip
    width = max(map(len, rows))
    input_ids = torch.full((2, width), cfg.pad_token_id)
    attention_mask = torch.zeros((2, width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r)
        attention_mask[i, :len(r)] = 1
    is_audio = (input_ids == cfg.audio_in_token_idx) | (input_ids == cfg.audio_out_token_idx)
    audio_ids = torch.randint(0, ROWS, (int(is_audio.sum()), cfg.audio_num_codebooks), generator=g)

    with torch.no_grad():
        out = ours(input_ids, audio_ids, attention_mask)
        got = ours.audio_logits(out.hidden_states[out.audio_out_mask])
        want = _reference_logits(qwen, table, cfg, input_ids, audio_ids, attention_mask)[out.audio_out_mask]
    assert got.shape == (12 + 1 + 9 + 1, 8, ROWS)  # each <|audio|> position plus the target rows
    assert (got - want).abs().max() <= 1e-5


RELEASED_NAMES = {"tied.embedding.text_embedding.weight": (151936, 2560), "body.norm.weight": (2560,),
                  "tied.embedding.modality_embeddings.0.embedding.weight": (8208, 2560)}
LAYER_SHAPES = {"self_attn.q_proj.weight": (4096, 2560), "self_attn.k_proj.weight": (1024, 2560),
                "self_attn.v_proj.weight": (1024, 2560), "self_attn.o_proj.weight": (2560, 4096),
                "self_attn.q_norm.weight": (128,), "self_attn.k_norm.weight": (128,),
                "mlp.gate_proj.weight": (9728, 2560), "mlp.up_proj.weight": (9728, 2560),
                "mlp.down_proj.weight": (2560, 9728), "input_layernorm.weight": (2560,),
                "post_attention_layernorm.weight": (2560,)}


def test_released_shape_on_meta():
    from higgs_ds.model.tts3_checkpoint import ours_to_released

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
