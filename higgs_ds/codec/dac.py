"""descript-audio-codec (DAC), loaded from a local weights file with ``dac.DAC.load``."""

from __future__ import annotations

from pathlib import Path

import torch

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec.base import AudioCodec, CodecConfig, CodecLoadError, sha256_of_files, unreadable_weights
from higgs_ds.device import resolve_device


class DacCodec(AudioCodec):
    # The conv biases turn zero padding into signal: a clip batched with a longer one gets other codes in
    # its last 1-3 frames. Each waveform is encoded alone, so codes never depend on what shares a batch.
    pads_independently = False

    def __init__(self, cfg: CodecConfig) -> None:
        import dac  # imported lazily: audiotools is slow to import and only codec users need it

        try:
            model = dac.DAC.load(str(cfg.path))
        except Exception as exc:  # dac raises KeyError/RuntimeError/UnpicklingError for foreign files
            raise CodecLoadError(f"{cfg.path} is not a descript-audio-codec weights file ({unreadable_weights(exc)})",
                                 where="--codec-path", fix="give the .pth file DAC's own download or training "
                                                           "wrote") from None
        self.model = model.to(resolve_device(cfg.device)).eval()  # the device was checked by load_codec
        available = int(self.model.n_codebooks)
        k = cfg.num_codebooks or available
        if k > available:
            raise CodecLoadError(f"{cfg.path}: the DAC has {available} codebooks, {k} were requested")
        self.spec = AudioSpec(codec="dac", sample_rate=int(self.model.sample_rate),
                              frame_rate=float(self.model.sample_rate / self.model.hop_length), num_codebooks=k,
                              codebook_size=int(self.model.codebook_size), codec_sha256=sha256_of_files([cfg.path]),
                              codec_path=str(Path(cfg.path).resolve()))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        audio = self.model.preprocess(batch, self.sample_rate)  # pads to a multiple of the hop
        _, codes, *_ = self.model.encode(audio, n_quantizers=self.num_codebooks)
        return codes[:, : self.num_codebooks]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        latents, _, _ = self.model.quantizer.from_codes(codes[None])
        return self.model.decode(latents)[0, 0]
