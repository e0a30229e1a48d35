"""The Higgs TTS 3 prompt's special tokens, looked up in a tokenizer: one place for the model config (which
needs `<|audio|>`, the pad and the audio placeholder ids) and the renderer (which builds prompts from all of
them)."""

from __future__ import annotations

from higgs_ds.data.render import lookup_tokens

TTS3_TOKENS = {"tts": "<|tts|>", "audio": "<|audio|>", "text": "<|text|>", "ref_audio": "<|ref_audio|>",
               "ref_text": "<|ref_text|>"}


def lookup_tts3_tokens(tokenizer) -> dict[str, int]:
    """name -> id for every token above, plus `pad` and the two audio placeholders `audio_in`/`audio_out`
    (the ids right after the tokenizer's last token, rows of the text table it never emits). Raises
    naming what the tokenizer lacks."""
    name = getattr(tokenizer, "name_or_path", "")
    ids = lookup_tokens(tokenizer, TTS3_TOKENS, "Higgs TTS 3")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"tokenizer {name!r} has no pad or eos token")
    return {**ids, "pad": pad, "audio_in": len(tokenizer), "audio_out": len(tokenizer) + 1}
