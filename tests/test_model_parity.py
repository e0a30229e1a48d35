"""Our DualFFN model against transformers' HiggsAudioV2ForConditionalGeneration, same weights."""

import torch
from transformers import HiggsAudioV2ForConditionalGeneration

from higgs_ds.model.checkpoint import ours_to_hf
from higgs_ds.model.config import tiny_config
from higgs_ds.model.modeling import HiggsAudioModel
from tests.model_utils import random_batch


def _port_inputs(cfg, batch):
    """The port marks every audio frame with one placeholder id and takes codes as [B, T, K]."""
    ids = batch["input_ids"]
    is_audio = (ids == cfg.audio_in_token_idx) | (ids == cfg.audio_out_token_idx)
    port_ids = ids.masked_fill(is_audio, cfg.audio_out_token_idx)
    per_row = is_audio.sum(1)
    t = int(per_row.max())
    audio = torch.zeros(ids.shape[0], t, cfg.audio_num_codebooks, dtype=torch.long)
    mask = torch.arange(t)[None] < per_row[:, None]
    audio[mask] = batch["audio_ids"]
    return dict(input_ids=port_ids, attention_mask=batch["attention_mask"], audio_input_ids=audio,
                audio_input_ids_mask=mask)


def test_logits_match_transformers_port_fp32():
    torch.manual_seed(0)
    cfg = tiny_config(num_hidden_layers=3)  # GQA: 4 query heads, 2 KV heads
    ours = HiggsAudioModel(cfg).eval()
    port = HiggsAudioV2ForConditionalGeneration(cfg.to_hf_port_config(), use_text_head=True).eval()
    result = port.load_state_dict(ours_to_hf(ours.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    batch = random_batch(cfg, [[(3, 6, "in"), (12, 9, "out")], [(5, 10, "out")]], seq_len=24, pad={1: 4})
    with torch.no_grad():
        out = ours(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
        ours_text = ours.text_logits(out.hidden_states)
        ours_audio = ours.audio_logits(out.hidden_states[out.audio_out_mask])
        port_inputs = _port_inputs(cfg, batch)
        port_audio = port(**port_inputs).logits.view(*batch["input_ids"].shape, cfg.audio_num_codebooks, -1)
        port_text = port.text_lm_head(port.model(**port_inputs).last_hidden_state)

    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours_audio, port_audio[out.audio_out_mask], atol=1e-5, rtol=1e-5)
    assert ours_audio.shape[1:] == (8, 1026)
    torch.testing.assert_close(ours_text[real], port_text[real], atol=1e-5, rtol=1e-5)
