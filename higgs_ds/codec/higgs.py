"""The Higgs Audio v2 tokenizer: the codec whose codes the released Higgs Audio v2 checkpoints understand.

It is transformers' ``HiggsAudioV2TokenizerModel`` (a DAC acoustic encoder/decoder plus a HuBERT semantic
encoder, residual VQ), fed by its ``DacFeatureExtractor``. A folder in transformers' layout loads with
``from_pretrained``; Boson's original folder (``config.json`` + ``model.pth``) is converted on load by
:mod:`higgs_ds.codec.boson_tokenizer`.

The class defaults of the transformers config (4 downsampling ratios, 5 bandwidths) give 75 frames/s and
5 quantizers: not the released tokenizer. What the folder's config gives is checked against
:data:`higgs_ds.audio_spec.HIGGS_AUDIO_TOKENIZER` (24 kHz, hop 960 = 25 frames/s, 8 x 1024 codes).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER, AudioSpec
from higgs_ds.codec.base import AudioCodec, CodecConfig, CodecLoadError, sha256_of_files
from higgs_ds.device import resolve_device

TOKENIZER_MODEL_TYPE = "higgs_audio_v2_tokenizer"
_WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "model.pth", "hubert_base/*.safetensors",
                    "hubert_base/*.bin")


def is_transformers_tokenizer_dir(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == TOKENIZER_MODEL_TYPE


def weight_files(path: str | Path) -> list[Path]:
    files = sorted({f for pattern in _WEIGHT_PATTERNS for f in Path(path).glob(pattern)})
    if not files:
        raise CodecLoadError(f"{path}: no tokenizer weights (model.safetensors or model.pth)")
    return files


def check_released_layout(config, where: str) -> None:
    """The tokenizer must give the codes the Higgs Audio v2 model embeds; name what differs otherwise."""
    want = HIGGS_AUDIO_TOKENIZER
    hop = config.hop_length
    got = {"sample rate": config.sample_rate, "frames/s": config.sample_rate / hop,
           "quantizers": config.num_quantizers, "codebook size": config.codebook_size}
    expected = {"sample rate": want.sample_rate, "frames/s": want.frame_rate, "quantizers": want.num_codebooks,
                "codebook size": want.codebook_size}
    wrong = [f"{k} {got[k]:g} (expected {expected[k]:g})" for k in expected if got[k] != expected[k]]
    if wrong:
        raise CodecLoadError(
            f"{where} is not the Higgs Audio v2 tokenizer the model expects: {', '.join(wrong)}. Its config gives "
            f"downsampling ratios {list(config.acoustic_model_config.downsampling_ratios)} (hop {hop}) and "
            f"target_bandwidths {list(config.target_bandwidths)}; the released tokenizer has ratios [8, 5, 4, 2, 3] "
            f"(hop 960 at 24 kHz) and target_bandwidths [0.5, 1, 1.5, 2] (8 quantizers).")


class HiggsTokenizerCodec(AudioCodec):
    # HuBERT attends over the whole input: zero-padding one waveform of a batch would change its codes.
    pads_independently = False

    def __init__(self, cfg: CodecConfig) -> None:
        from transformers import DacFeatureExtractor, HiggsAudioV2TokenizerModel

        from higgs_ds.codec.boson_tokenizer import is_boson_tokenizer_dir, load_boson_tokenizer

        path = Path(cfg.path)
        if is_transformers_tokenizer_dir(path):
            model = HiggsAudioV2TokenizerModel.from_pretrained(str(path))
        elif is_boson_tokenizer_dir(path):
            model = load_boson_tokenizer(path)
        else:
            raise CodecLoadError(f"{path}: neither a transformers Higgs Audio v2 tokenizer folder (config.json with "
                                 f"model_type {TOKENIZER_MODEL_TYPE!r}) nor Boson's (config.json + model.pth)")
        check_released_layout(model.config, str(path))
        self.model = model.to(resolve_device(cfg.device)).eval()
        hop = model.config.hop_length
        if (path / "preprocessor_config.json").is_file():
            self.features = DacFeatureExtractor.from_pretrained(str(path))
        else:
            self.features = DacFeatureExtractor(sampling_rate=model.config.sample_rate, hop_length=hop)
        if self.features.sampling_rate != model.config.sample_rate:
            raise CodecLoadError(f"{path}: preprocessor sampling rate {self.features.sampling_rate} differs from the "
                                 f"model's {model.config.sample_rate}")
        self.spec = AudioSpec(codec="higgs", sample_rate=int(model.config.sample_rate),
                              frame_rate=model.config.sample_rate / hop, num_codebooks=model.config.num_quantizers,
                              codebook_size=int(model.config.codebook_size),
                              codec_sha256=sha256_of_files(weight_files(path)), codec_path=str(path.resolve()))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        inputs = self.features(raw_audio=[row[0].cpu().numpy() for row in batch], sampling_rate=self.sample_rate,
                               return_tensors="pt")
        return self.model.encode(inputs["input_values"].to(self.device), return_dict=False)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes[None], return_dict=False)[0, 0]
