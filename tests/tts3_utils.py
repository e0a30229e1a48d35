"""Tiny Higgs TTS 3 stand-ins for tests: a byte-level tokenizer with the release's special tokens, and a
random model folder in the released layout (config.json with a null rope_theta, Boson's tensor names, a
bundled "codec" under the modality embedding, the tokenizer beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from higgs_ds.models.higgs_tts3.checkpoint import CODEC_PREFIX, ours_to_released
from higgs_ds.models.higgs_tts3.config import tiny_tts3_config, tts3_token_ids
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model

SPECIAL_TOKENS = ["<|endoftext|>", "<|tts|>", "<|audio|>", "<|text|>", "<|ref_audio|>", "<|ref_text|>",
                  "<|happy|>"]  # the last one stands for the release's control tags
CORPUS = ["مرحبا بكم في الاختبار", "hello world", "السلام عليكم ورحمة الله", "one two three four"]
VOCAB = 512


def tiny_tts3_tokenizer(out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def tiny_model_config(tokenizer, **overrides):
    return tiny_tts3_config(vocab_size=VOCAB, **tts3_token_ids(tokenizer), **overrides)


def codec_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {CODEC_PREFIX + "encoder.conv.weight": torch.randn(4, 1, 7, generator=g),
            CODEC_PREFIX + "quantizer.codebook.embed": torch.randn(16, 8, generator=g).half()}


def write_tiny_tts3_folder(directory: str | Path, seed: int = 0, dtype=torch.bfloat16) -> Path:
    """A random tiny model in the released layout; returns the folder."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tts3_tokenizer(d)
    cfg = tiny_model_config(tokenizer)
    torch.manual_seed(seed)
    model = HiggsTTS3Model(cfg)
    text = cfg.text_config.to_dict()
    text = {k: text[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                                 "max_position_embeddings", "tie_word_embeddings")}
    config = {"model_type": "higgs_multimodal_qwen3", "architectures": ["HiggsMultimodalQwen3ForConditionalGeneration"],
              "text_config": {**text, "model_type": "qwen3", "rope_theta": None},
              "audio_encoder_config": {"encoder_type": "discrete", "num_codebooks": 8, "vocab_size": 1026,
                                       "tie_word_embeddings": True},
              "audio_token_id": -100, "audio_tokenizer_id": "local/codec", "sample_rate": 24000}
    (d / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: v.to(dtype).contiguous() for k, v in ours_to_released(model.state_dict()).items()}
    save_file({**tensors, **codec_tensors(seed)}, d / "model.safetensors", metadata={"format": "pt"})
    return d
