"""What every family's config derives alike from its backbone config and its codebooks."""

from __future__ import annotations

from typing import Any


class AudioModelShape:
    """Mixin for configs with a `text_config` (the backbone's transformers config) and `audio_codebook_size`."""

    @property
    def codebook_rows(self) -> int:
        """Rows per codebook table: the codes plus the stream BOS and EOS."""
        return self.audio_codebook_size + 2

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size


def tiny_text_sizes(overrides: dict[str, Any]) -> dict[str, int]:
    """The tiny backbone's sizes, with those given in `overrides` applied (and taken out of it)."""
    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
    sizes.update({k: overrides.pop(k) for k in list(overrides) if k in sizes})
    return sizes


def fresh_sizes(shape) -> dict[str, int]:
    """A `FreshModelShape` as backbone keyword arguments (head_dim from hidden size and heads)."""
    return dict(hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
                num_key_value_heads=shape.num_key_value_heads, head_dim=shape.hidden_size // shape.num_attention_heads)


def spec_fields(spec) -> dict[str, Any]:
    """A data `AudioSpec` as the audio fields of a config."""
    return dict(audio_num_codebooks=spec.num_codebooks, audio_codebook_size=spec.codebook_size,
                audio_stream_bos_id=spec.stream_bos, audio_stream_eos_id=spec.stream_eos)
