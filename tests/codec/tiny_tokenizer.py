"""A tiny random Higgs Audio v2 tokenizer with the released layout, for tests that must run on a CPU.

Released layout: 24 kHz, DAC downsampling 8,5,4,2,3 (hop 960 = 25 frames/s), target bandwidths up to
2 kbps (8 quantizers of 1024 codes), a HuBERT semantic model at 16 kHz (hop 320 = 50 frames/s, every second
frame kept). Only the widths are small. The class's init zeroes the codebooks (every code would be 0), so
they are drawn at random here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DacFeatureExtractor, HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel

RELEASED_RATIOS = [8, 5, 4, 2, 3]
RELEASED_BANDWIDTHS = [0.5, 1, 1.5, 2]


def tiny_higgs_tokenizer_config() -> HiggsAudioV2TokenizerConfig:
    acoustic = {"encoder_hidden_size": 2, "downsampling_ratios": RELEASED_RATIOS,
                "upsampling_ratios": RELEASED_RATIOS, "decoder_hidden_size": 128, "hidden_size": 16}
    semantic = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
                "mask_time_prob": 0.0}
    return HiggsAudioV2TokenizerConfig(sample_rate=24000, target_bandwidths=RELEASED_BANDWIDTHS, codebook_size=1024,
                                       codebook_dim=8, acoustic_model_config=acoustic, semantic_model_config=semantic)


def build_tiny_higgs_tokenizer(seed: int = 0) -> HiggsAudioV2TokenizerModel:
    """Random weights drawn from `seed`: the same seed gives the same model, bit for bit."""
    torch.manual_seed(seed)
    model = HiggsAudioV2TokenizerModel(tiny_higgs_tokenizer_config()).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for vq in model.quantizer.quantizers:
            embed = torch.randn(vq.codebook.embed.shape, generator=generator) * 0.1
            vq.codebook.embed.copy_(embed)
            vq.codebook.embed_avg.copy_(embed)
    return model


def save_tiny_higgs_tokenizer(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny tokenizer in transformers' layout (weights + config + preprocessor_config.json)."""
    directory = Path(directory)
    model = build_tiny_higgs_tokenizer(seed)
    model.save_pretrained(directory)
    DacFeatureExtractor(sampling_rate=model.config.sample_rate, hop_length=model.config.hop_length).save_pretrained(
        directory)
    return directory
