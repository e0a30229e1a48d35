"""A tiny random Whisper saved as a local folder (byte-level vocabulary, no merges), so the real
loading and batched decoding code runs without any download. Its transcripts are noise."""

from pathlib import Path

from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ar|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def save_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIALS)})
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    end = vocab["<|endoftext|>"]
    config = WhisperConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=vocab["<|startoftranscript|>"], eos_token_id=end, pad_token_id=end,
                           bos_token_id=end)
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.lang_to_id = {"<|en|>": vocab["<|en|>"], "<|ar|>": vocab["<|ar|>"]}
    generation.task_to_id = {"translate": vocab["<|translate|>"], "transcribe": vocab["<|transcribe|>"]}
    generation.no_timestamps_token_id = vocab["<|notimestamps|>"]
    generation.is_multilingual = True
    # a random model would emit special tokens only (an empty transcript): let it speak bytes
    generation.forced_decoder_ids, generation.begin_suppress_tokens = None, []
    generation.suppress_tokens = [vocab[token] for token in SPECIALS[1:]]
    generation._from_model_config = False  # else loading drops the Whisper-specific fields above
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder
