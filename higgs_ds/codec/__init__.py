"""Audio codecs behind one interface: waveforms <-> codes [K, T], each described by an `AudioSpec`.

    codec = load_codec(CodecConfig(path="/ckpt/higgs-audio-v2-tokenizer"))   # kind detected from the path
    codes = codec.encode([wave], sample_rate)[0]                              # [8, T] int64
    wave = codec.decode(codes)                                                # [T x 960] at 24 kHz

Backends: ``dac`` (descript-audio-codec, a ``.pth`` weights file) and ``higgs`` (the Higgs Audio v2
tokenizer, a transformers folder or Boson's original folder).
"""

from __future__ import annotations

from pathlib import Path

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec.base import (
    AudioCodec,
    CodecConfig,
    CodecLoadError,
    load_audio,
    sha256_of_files,
)
from higgs_ds.device import device_problem

__all__ = ["AudioCodec", "CodecConfig", "CodecLoadError", "detect_codec_kind", "load_audio", "load_codec",
           "load_codec_for_spec", "sha256_of_files"]


def detect_codec_kind(path: str | Path) -> str:
    """"dac" for a weights file, "higgs" for a tokenizer folder (transformers or Boson layout)."""
    path = Path(path)
    if path.is_file():
        return "dac"
    from higgs_ds.codec.boson_tokenizer import is_boson_tokenizer_dir
    from higgs_ds.codec.higgs import is_transformers_tokenizer_dir

    if is_transformers_tokenizer_dir(path) or is_boson_tokenizer_dir(path):
        return "higgs"
    raise CodecLoadError(f"cannot tell which codec {path} is: expected a DAC weights file (.pth) or a Higgs Audio "
                         f"v2 tokenizer folder; pass --codec dac|higgs")


def load_codec(cfg: CodecConfig) -> AudioCodec:
    """The codec of `cfg`, on its device. A device this machine lacks is named as the problem before the
    weights are read (never blamed on them)."""
    problem = device_problem(cfg.device)
    if problem:
        raise CodecLoadError(f"the codec's device {cfg.device} is no device of this machine", fix=problem)
    kind = detect_codec_kind(cfg.path) if cfg.kind == "auto" else cfg.kind
    if kind == "dac":
        from higgs_ds.codec.dac import DacCodec

        return DacCodec(cfg)
    from higgs_ds.codec.higgs import HiggsTokenizerCodec

    return HiggsTokenizerCodec(cfg)


def load_codec_for_spec(spec: AudioSpec, path: str | Path | None = None, device: str = "auto",
                        what: str = "the codes") -> AudioCodec:
    """The codec that decodes codes of ``spec``: loaded from ``path`` or, when None, from the path the spec
    recorded; its own spec must match (same family, rates, codebooks and weights)."""
    path = path or spec.codec_path
    if not path:
        raise CodecLoadError(f"{what} name no codec path ({spec.describe()}): pass the codec with --codec-path")
    if not Path(path).exists():
        raise CodecLoadError(f"the codec {what} were made with, {path}, does not exist here: pass its local copy "
                             f"with --codec-path ({spec.describe()})")
    codec = load_codec(CodecConfig(path=str(path), kind=spec.codec, num_codebooks=spec.num_codebooks,
                                   device=device))
    spec.require_match(codec.spec, what, f"codec {path}")
    return codec
