"""`HiggsAudioConfig`: the one source of truth for the model's shape and token ids.

It wraps a transformers `LlamaConfig` (the shared backbone, RoPE scaling included) and adds the
audio fields of Boson's `HiggsAudioConfig`. It reads and writes both checkpoint layouts:
Boson's original `config.json` (`model_type: higgs_audio`, a nested `text_config`) and the
transformers-native port (`model_type: higgs_audio_v2`, flat, `codebook_size` = codes + 2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transformers import LlamaConfig

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER as _RELEASED_CODES
from higgs_ds.audio_spec import AudioSpec
from higgs_ds.data.render import lookup_tokens
from higgs_ds.models.config_shape import AudioModelShape, fresh_sizes, spec_fields, tiny_text_sizes

ADAPTER_TYPES = ("dual_ffn", "dual_ffn_fast_forward")

# config field -> the special token whose id it holds (the tokenizer is the authority on these ids)
TOKEN_FIELDS = {
    "audio_in_token_idx": "<|AUDIO|>",
    "audio_out_token_idx": "<|AUDIO_OUT|>",
    "audio_out_bos_token_id": "<|audio_out_bos|>",
    "audio_eos_token_id": "<|audio_eos|>",
    "pad_token_id": "<|end_of_text|>",
}
# Ids the transformers port's config.json does not carry (it has one placeholder for all audio).
_PORT_MISSING_IDS = ("audio_in_token_idx", "audio_eos_token_id")
# transformers-port config field -> ours (codebook_size differs by the two stream ids: handled apart)
_PORT_FIELDS = {"num_codebooks": "audio_num_codebooks", "audio_stream_bos_id": "audio_stream_bos_id",
                "audio_stream_eos_id": "audio_stream_eos_id", "audio_token_id": "audio_out_token_idx",
                "audio_bos_token_id": "audio_out_bos_token_id", "pad_token_id": "pad_token_id"}


def token_ids_from_tokenizer(tokenizer) -> dict[str, int]:
    """The config's token-id fields as a tokenizer maps them; raises naming the tokens it lacks."""
    return lookup_tokens(tokenizer, TOKEN_FIELDS, "Higgs Audio")

# Boson config fields we read; everything else in their config.json (Whisper encoder config, rq
# transformer knobs, ...) is kept verbatim in `extra` and written back on export.
_BOSON_FIELDS = (
    "audio_adapter_type", "audio_dual_ffn_layers", "audio_num_codebooks", "audio_codebook_size",
    "audio_stream_bos_id", "audio_stream_eos_id", "audio_in_token_idx", "audio_out_token_idx",
    "audio_out_bos_token_id", "audio_eos_token_id", "pad_token_id", "use_delay_pattern",
    "encode_audio_in_tokens", "skip_audio_tower", "audio_embed_avg",
)


@dataclass
class HiggsAudioConfig(AudioModelShape):
    text_config: LlamaConfig
    # Defaults: the released checkpoints' codes (their config.json may omit these fields).
    audio_num_codebooks: int = _RELEASED_CODES.num_codebooks
    audio_codebook_size: int = _RELEASED_CODES.codebook_size
    audio_stream_bos_id: int = _RELEASED_CODES.stream_bos
    audio_stream_eos_id: int = _RELEASED_CODES.stream_eos
    audio_adapter_type: str = "dual_ffn_fast_forward"
    audio_dual_ffn_layers: list[int] | None = None  # None: every layer is DualFFN
    audio_in_token_idx: int = 128015  # <|AUDIO|>: one position per input (reference) audio frame
    audio_out_token_idx: int = 128016  # <|AUDIO_OUT|>: one position per output audio frame
    audio_out_bos_token_id: int = 128013
    audio_eos_token_id: int = 128012
    pad_token_id: int = 128001
    use_delay_pattern: bool = True
    encode_audio_in_tokens: bool = True
    skip_audio_tower: bool = True
    audio_embed_avg: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.text_config, dict):
            self.text_config = LlamaConfig(**self.text_config)
        text_cfg = self.text_config
        if self.audio_adapter_type not in ADAPTER_TYPES:
            raise ValueError(
                f"audio_adapter_type={self.audio_adapter_type!r} is not supported; use one of {ADAPTER_TYPES}"
            )
        if self.audio_dual_ffn_layers is None:
            self.audio_dual_ffn_layers = list(range(text_cfg.num_hidden_layers))
        bad = [i for i in self.audio_dual_ffn_layers if not 0 <= i < text_cfg.num_hidden_layers]
        if bad:
            raise ValueError(f"audio_dual_ffn_layers {bad} outside [0, {text_cfg.num_hidden_layers})")
        if self.audio_num_codebooks < 1 or self.audio_codebook_size < 1:
            raise ValueError("audio_num_codebooks and audio_codebook_size must be positive")
        for name in ("audio_stream_bos_id", "audio_stream_eos_id"):
            if not 0 <= getattr(self, name) < self.codebook_rows:
                raise ValueError(f"{name}={getattr(self, name)} outside the {self.codebook_rows}-row codebook")
        for name in ("audio_in_token_idx", "audio_out_token_idx", "audio_out_bos_token_id",
                     "audio_eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < text_cfg.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} outside the text vocabulary ({text_cfg.vocab_size})")
        if self.audio_embed_avg:
            raise ValueError("audio_embed_avg=True is not supported (the released model sums codebooks)")
        # One attention implementation everywhere: our masks are boolean 4-D masks.
        text_cfg._attn_implementation = "sdpa"

    @property
    def audio_head_token_ids(self) -> tuple[int, ...]:
        """Ids of the positions whose hidden state goes through the audio head."""
        return (self.audio_out_token_idx,)

    def is_dual_ffn_layer(self, i: int) -> bool:
        return i in self.audio_dual_ffn_layers

    # ---- Boson layout -------------------------------------------------------------------------
    @classmethod
    def from_boson_dict(cls, d: dict[str, Any]) -> HiggsAudioConfig:
        if "text_config" not in d:
            raise ValueError("not a Boson Higgs Audio config: no 'text_config' field")
        if not d.get("skip_audio_tower", False) and d.get("encode_whisper_embed", False):
            raise ValueError("checkpoints that use the Whisper audio tower are not supported (skip_audio_tower=False)")
        known = {k: d[k] for k in _BOSON_FIELDS if k in d}
        extra = {k: v for k, v in d.items() if k not in known and k != "text_config"}
        return cls(text_config=LlamaConfig(**d["text_config"]), extra=extra, **known)

    def to_boson_dict(self) -> dict[str, Any]:
        d = dict(self.extra)
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("text_config", "extra")})
        text = self.text_config.to_dict()
        text.pop("_attn_implementation_internal", None)
        d.update(model_type="higgs_audio", architectures=["HiggsAudioModel"], text_config=text)
        return d

    # ---- transformers-native layout ------------------------------------------------------------
    def to_hf_port_config(self):
        """The equivalent `transformers.HiggsAudioV2Config` (all layers DualFFN, one audio placeholder)."""
        from transformers import HiggsAudioV2Config

        if len(self.audio_dual_ffn_layers) != self.text_config.num_hidden_layers:
            raise ValueError("the transformers port has no fast-forward layers: every layer must be DualFFN")
        text_cfg = self.text_config
        return HiggsAudioV2Config(
            vocab_size=text_cfg.vocab_size, hidden_size=text_cfg.hidden_size,
            intermediate_size=text_cfg.intermediate_size,
            num_hidden_layers=text_cfg.num_hidden_layers, num_attention_heads=text_cfg.num_attention_heads,
            num_key_value_heads=text_cfg.num_key_value_heads, head_dim=text_cfg.head_dim,
            max_position_embeddings=text_cfg.max_position_embeddings, rms_norm_eps=text_cfg.rms_norm_eps,
            rope_parameters=dict(text_cfg.rope_parameters), pad_token_id=self.pad_token_id,
            num_codebooks=self.audio_num_codebooks, codebook_size=self.codebook_rows,
            audio_token_id=self.audio_out_token_idx, audio_bos_token_id=self.audio_out_bos_token_id,
            audio_stream_bos_id=self.audio_stream_bos_id, audio_stream_eos_id=self.audio_stream_eos_id,
            architectures=["HiggsAudioV2ForConditionalGeneration"],
            # ids the port does not model (it has one placeholder for all audio); kept for our reload
            audio_in_token_idx=self.audio_in_token_idx, audio_eos_token_id=self.audio_eos_token_id,
        )

    @classmethod
    def from_hf_port_dict(cls, d: dict[str, Any], token_ids: dict[str, int] | None = None) -> HiggsAudioConfig:
        """`token_ids` (from the checkpoint's tokenizer) supply the ids the port's config.json lacks."""
        missing = [k for k in _PORT_MISSING_IDS if k not in d and k not in (token_ids or {})]
        if missing:
            raise ValueError(f"this transformers-layout config.json has no {' / '.join(missing)} (the port does "
                             f"not write them): load it together with its tokenizer (the ids of <|AUDIO|> and "
                             f"<|audio_eos|>), or add {missing} to config.json")
        ids = {k: d[k] if k in d else token_ids[k] for k in _PORT_MISSING_IDS}
        llama_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                      "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                      "rms_norm_eps", "rope_parameters", "hidden_act")
        text = LlamaConfig(**{k: d[k] for k in llama_keys if k in d}, tie_word_embeddings=False)
        ours = {ours: d[port] for port, ours in _PORT_FIELDS.items() if port in d}  # absent: our defaults
        if "codebook_size" in d:
            ours["audio_codebook_size"] = d["codebook_size"] - 2  # the port counts stream BOS/EOS as codes
        return cls(text_config=text, **ours, **ids)

    @classmethod
    def from_dict(cls, d: dict[str, Any], token_ids: dict[str, int] | None = None) -> HiggsAudioConfig:
        """Read either layout's config.json (`token_ids`: see `from_hf_port_dict`)."""
        if d.get("model_type") == "higgs_audio_v2":
            return cls.from_hf_port_dict(d, token_ids)
        return cls.from_boson_dict(d)


# Llama 3's RoPE scaling, as the released backbone has it
_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 0.125,
                "high_freq_factor": 0.5, "original_max_position_embeddings": 1024}


def tiny_config(vocab_size: int = 512, **overrides) -> HiggsAudioConfig:
    """A small GQA config for tests and the CPU demo. Token ids must fit in `vocab_size`."""
    text_kw = tiny_text_sizes(overrides)
    text = LlamaConfig(vocab_size=vocab_size, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_parameters=dict(_LLAMA3_ROPE), **text_kw)
    ids = dict(audio_in_token_idx=vocab_size - 5, audio_out_token_idx=vocab_size - 4,
               audio_out_bos_token_id=vocab_size - 3, audio_eos_token_id=vocab_size - 2,
               pad_token_id=vocab_size - 1)
    ids.update(overrides)
    return HiggsAudioConfig(text_config=text, **ids)


def fresh_config(shape, tokenizer, spec: AudioSpec) -> HiggsAudioConfig:
    """A model trained from scratch: the tiny backbone at `shape`'s sizes, the data's codes, the tokenizer's ids."""
    return tiny_config(vocab_size=len(tokenizer), **fresh_sizes(shape), **spec_fields(spec),
                       use_delay_pattern=spec.delay_pattern, **token_ids_from_tokenizer(tokenizer))


def released_config() -> HiggsAudioConfig:
    """The released Higgs Audio v2 generation model (3B backbone): Llama 3.2 3B with DualFFN in every layer."""
    text = LlamaConfig(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                       num_attention_heads=24, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                       max_position_embeddings=131072, tie_word_embeddings=False, rope_parameters=dict(_LLAMA3_ROPE))
    return HiggsAudioConfig(text_config=text)
