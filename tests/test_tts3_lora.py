"""LoRA groups on the Higgs TTS 3 model: attention and MLP adapters; the tied audio table trained in full by
either audio flag; merged weights equal the adapted model's outputs."""

import torch

from higgs_ds.models import get_family
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model
from higgs_ds.train.lora import LoraConfig, adapter_state_dict, apply_lora, merged_state_dict
from tests.tts3_utils import tiny_model_config, tiny_tts3_tokenizer


def test_lora_on_tts3_trains_adapters_and_the_tied_table_and_merges():
    cfg = tiny_model_config(tiny_tts3_tokenizer())
    torch.manual_seed(0)
    model = HiggsTTS3Model(cfg)
    lora = LoraConfig(enabled=True, rank=4, targets=["attention", "text_mlp"], train_audio_head=True)
    apply_lora(model, lora)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "audio_table.weight" in trained and "embed_tokens.weight" not in trained
    embeddings_only = LoraConfig(enabled=True, targets=["attention"], train_audio_embeddings=True)
    assert embeddings_only.fully_trained_modules(get_family("higgs_tts3")) == ["audio_table"]  # the other flag too
    assert any("self_attn.q_proj.lora_A" in n for n in trained) and any("mlp.down_proj.lora_B" in n for n in trained)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # adapters that change the output
    ids = torch.tensor([[5, 6, cfg.audio_token_id] + [cfg.audio_out_token_idx] * 4])
    codes = torch.randint(0, 1024, (4, 8))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    want = model.eval()(ids, codes).hidden_states

    assert "base_model.model.audio_table.weight" in adapter_state_dict(state, lora, get_family("higgs_tts3"))
    merged = HiggsTTS3Model(cfg).eval()
    merged.load_state_dict(merged_state_dict(state, cfg, lora), strict=True)
    torch.testing.assert_close(merged(ids, codes).hidden_states, want, atol=1e-5, rtol=1e-5)
