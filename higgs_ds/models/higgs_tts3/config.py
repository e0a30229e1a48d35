"""`HiggsTTS3Config`: shape and token ids of Higgs TTS 3 (a Qwen3 backbone with one tied audio table).

It reads and writes the released `config.json` (`model_type: higgs_multimodal_qwen3`): a nested Qwen3
`text_config` and an `audio_encoder_config` whose `vocab_size` counts the codes plus BOC and EOC. Fields
of the released file that the model does not use are kept in `extra` and written back unchanged; the ids
higgs-ds needs and the release does not store go under the `higgs_ds` key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transformers import Qwen3Config

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER as _RELEASED_CODES
from higgs_ds.audio_spec import AudioSpec
from higgs_ds.models.config_shape import AudioModelShape, fresh_sizes, spec_fields, tiny_text_sizes
from higgs_ds.models.higgs_tts3.tokens import lookup_tts3_tokens

MODEL_TYPE = "higgs_multimodal_qwen3"
# The released config stores rope_theta as null; Qwen3 was trained with 1e6 (no scaling).
QWEN3_ROPE_THETA = 1_000_000.0
_OURS = "higgs_ds"  # config.json key holding the ids below (absent from a released folder)
_ID_FIELDS = ("audio_token_id", "audio_in_token_idx", "audio_out_token_idx", "pad_token_id")


def qwen3_text_config(d: dict[str, Any]) -> Qwen3Config:
    """A Qwen3Config from a released `text_config` dict (null rope_theta -> 1e6)."""
    d = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    theta = d.pop("rope_theta", None) or QWEN3_ROPE_THETA
    if d.get("rope_scaling") is None and "rope_parameters" not in d:
        d.pop("rope_scaling", None)
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": float(theta)}
    return Qwen3Config(**d)


@dataclass
class HiggsTTS3Config(AudioModelShape):
    text_config: Qwen3Config
    audio_num_codebooks: int = _RELEASED_CODES.num_codebooks
    audio_codebook_size: int = _RELEASED_CODES.codebook_size
    audio_stream_bos_id: int = _RELEASED_CODES.stream_bos  # BOC
    audio_stream_eos_id: int = _RELEASED_CODES.stream_eos  # EOC
    audio_token_id: int = 151670  # <|audio|>: its position predicts the first delayed row
    # Positions of reference / target rows hold these ids; their embedding is replaced by the audio table's.
    # None: the last two rows of the text vocabulary, which the tokenizer never emits.
    audio_in_token_idx: int | None = None
    audio_out_token_idx: int | None = None
    pad_token_id: int = 151643  # <|endoftext|>
    use_delay_pattern: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.text_config, dict):
            self.text_config = qwen3_text_config(self.text_config)
        vocab = self.text_config.vocab_size
        if self.audio_in_token_idx is None:
            self.audio_in_token_idx = vocab - 2
        if self.audio_out_token_idx is None:
            self.audio_out_token_idx = vocab - 1
        if self.audio_num_codebooks < 1 or self.audio_codebook_size < 1:
            raise ValueError("audio_num_codebooks and audio_codebook_size must be positive")
        for name in ("audio_stream_bos_id", "audio_stream_eos_id"):
            if not 0 <= getattr(self, name) < self.codebook_rows:
                raise ValueError(f"{name}={getattr(self, name)} outside the {self.codebook_rows}-row codebook")
        for name in _ID_FIELDS:
            if not 0 <= getattr(self, name) < vocab:
                raise ValueError(f"{name}={getattr(self, name)} outside the text vocabulary ({vocab})")
        if len({getattr(self, n) for n in _ID_FIELDS}) != len(_ID_FIELDS):
            raise ValueError(f"the ids {[(n, getattr(self, n)) for n in _ID_FIELDS]} must all differ")
        self.text_config._attn_implementation = "sdpa"  # our masks are boolean 4-D masks

    @property
    def audio_head_token_ids(self) -> tuple[int, ...]:
        """Ids of the positions whose hidden state goes through the audio head: `<|audio|>` and target rows."""
        return (self.audio_token_id, self.audio_out_token_idx)

    # ---- the released layout -------------------------------------------------------------------
    def to_boson_dict(self) -> dict[str, Any]:
        """The released config.json (Boson's layout), with our ids under `higgs_ds`."""
        d = dict(self.extra)
        if "text_config" not in d:  # a model not loaded from a release: its own Qwen3 config
            text = self.text_config.to_dict()
            text.pop("_attn_implementation_internal", None)
            d["text_config"] = text
        encoder = dict(d.get("audio_encoder_config") or {})
        encoder.update(encoder_type="discrete", num_codebooks=self.audio_num_codebooks,
                       vocab_size=self.codebook_rows)
        encoder.setdefault("tie_word_embeddings", True)
        d.update(model_type=MODEL_TYPE, audio_encoder_config=encoder)
        d.setdefault("audio_token_id", -100)
        d[_OURS] = {name: getattr(self, name) for name in _ID_FIELDS} | {
            "audio_stream_bos_id": self.audio_stream_bos_id, "audio_stream_eos_id": self.audio_stream_eos_id}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], token_ids: dict[str, int] | None = None) -> HiggsTTS3Config:
        """Read a released (or higgs-ds written) config.json. `token_ids` (from the folder's tokenizer, see
        `tts3_token_ids`) override the release's default ids."""
        if d.get("model_type") != MODEL_TYPE:
            raise ValueError(f"not a Higgs TTS 3 config: model_type={d.get('model_type')!r}, "
                             f"expected {MODEL_TYPE!r}")
        encoder = d.get("audio_encoder_config") or {}
        if encoder.get("encoder_type", "discrete") != "discrete":
            raise ValueError(f"audio_encoder_config.encoder_type={encoder.get('encoder_type')!r}: only the "
                             f"discrete (TTS) audio path is supported")
        if not encoder.get("tie_word_embeddings", True):
            raise ValueError("audio_encoder_config.tie_word_embeddings=false: only the tied audio head is supported")
        if "text_config" not in d or "num_codebooks" not in encoder or "vocab_size" not in encoder:
            raise ValueError("Higgs TTS 3 config.json needs text_config and audio_encoder_config.{num_codebooks, "
                             "vocab_size}")
        rows = int(encoder["vocab_size"])
        ours = dict(d.get(_OURS) or {})
        ours.update(token_ids or {})
        extra = {k: v for k, v in d.items() if k != _OURS}
        return cls(text_config=qwen3_text_config(d["text_config"]), audio_num_codebooks=int(encoder["num_codebooks"]),
                   audio_codebook_size=rows - 2, extra=extra,
                   **{k: v for k, v in ours.items() if k in {f.name for f in dataclasses.fields(cls)}})


def tts3_token_ids(tokenizer) -> dict[str, int]:
    """The config's ids as a tokenizer maps them: `<|audio|>`, the pad id, and as audio placeholders the two
    ids right after the tokenizer's last token (rows of the text table it never emits). Raises naming the
    special tokens it lacks."""
    ids = lookup_tts3_tokens(tokenizer)
    return {"audio_token_id": ids["audio"], "pad_token_id": ids["pad"], "audio_in_token_idx": ids["audio_in"],
            "audio_out_token_idx": ids["audio_out"]}


def released_tts3_config() -> HiggsTTS3Config:
    """The shape of the released Higgs TTS 3 (4B): Qwen3 with 36 layers, hidden 2560, GQA 32/8, head_dim 128."""
    text = qwen3_text_config(dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                                  attention_bias=False, tie_word_embeddings=True, max_position_embeddings=40960,
                                  rope_theta=None))
    return HiggsTTS3Config(text_config=text)


def tiny_tts3_config(vocab_size: int = 512, **overrides) -> HiggsTTS3Config:
    """A small GQA TTS 3 config for tests. Token ids must fit in `vocab_size`."""
    text = qwen3_text_config(dict(vocab_size=vocab_size, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                  rope_theta=None, **tiny_text_sizes(overrides)))
    ids = dict(audio_token_id=vocab_size - 4, pad_token_id=vocab_size - 3)
    ids.update(overrides)
    return HiggsTTS3Config(text_config=text, **ids)


def fresh_config(shape, tokenizer, spec: AudioSpec) -> HiggsTTS3Config:
    """A model trained from scratch: the tiny backbone at `shape`'s sizes, the data's codes, the tokenizer's ids
    (two rows past the tokenizer's last token hold the audio placeholders)."""
    return tiny_tts3_config(vocab_size=len(tokenizer) + 2, **fresh_sizes(shape), **spec_fields(spec),
                            **tts3_token_ids(tokenizer))
