"""`segment --separate demucs:FOLDER`: the vocals stem of each recording, by a Demucs model read from a
local folder, written beside the output and segmented instead of the recording (broadcast speech often
has a music bed that VAD, the speaker encoder and later the codec would all hear).

The folder is what `demucs.pretrained.get_model(name, repo=FOLDER)` reads: a bag of models
(`<name>.yaml` naming signatures) and the models themselves (`<signature>[-<checksum>].th`), e.g. the
files of `htdemucs` copied by hand; nothing is downloaded. The recording is separated 60 s at a time at
the model's rate and channels and brought back to its own rate as mono, so the stem has exactly the
recording's length in samples (the accounting counts the recording's samples). Demucs is pinned in
requirements.txt and imported only here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.errors import ConfigError
from higgs_ds.quality.signal import resample

BLOCK_SECONDS = 60


def _model_name(folder: Path) -> str:
    bags = sorted(p.stem for p in folder.glob("*.yaml"))
    models = sorted(p.stem.rsplit("-", 1)[0] if "-" in p.stem else p.stem for p in folder.glob("*.th"))
    names = bags or models
    if len(names) != 1:
        raise ConfigError(f"{folder} holds {len(names)} Demucs models ({', '.join(names) or 'none'})",
                          where="--separate", fix="give a folder with one bag (<name>.yaml + its .th files) "
                                                  "or one <signature>.th model")
    return names[0]


class VocalsSeparator:
    def __init__(self, spec: str, device: str = "cpu") -> None:
        from demucs.pretrained import get_model

        folder = Path(spec.partition(":")[2])
        self.model = get_model(_model_name(folder), repo=folder)
        self.model.eval()
        if "vocals" not in self.model.sources:
            raise ConfigError(f"the Demucs model in {folder} has no vocals stem ({self.model.sources})",
                              where="--separate", fix="give a model trained with a vocals source")
        self.vocals, self.device = self.model.sources.index("vocals"), device

    def vocals_of(self, block: np.ndarray, rate: int) -> np.ndarray:
        """[samples, channels] at `rate` -> the vocals stem, mono, at `rate`, the same length."""
        import torch
        from demucs.apply import apply_model

        model_rate, channels = self.model.samplerate, self.model.audio_channels
        mono = block.mean(axis=1)
        wav = torch.from_numpy(resample(mono, rate, model_rate)).float()[None].expand(channels, -1)
        with torch.no_grad():
            stems = apply_model(self.model, wav[None], device=self.device, progress=False, num_workers=0)
        vocals = resample(stems[0, self.vocals].mean(0).cpu().numpy(), model_rate, rate)
        out = np.zeros(len(block), dtype=np.float32)
        out[:min(len(out), len(vocals))] = vocals[:len(out)]
        return out

    def write_vocals(self, source: Path, target: Path) -> Path:
        """The vocals stem of `source`, written to `target` (WAV, float) at the source's rate."""
        info = soundfile.info(str(source))
        target.parent.mkdir(parents=True, exist_ok=True)
        with soundfile.SoundFile(str(target), "w", info.samplerate, 1, "FLOAT") as f:
            for block in soundfile.blocks(str(source), blocksize=BLOCK_SECONDS * info.samplerate, always_2d=True,
                                          dtype="float32"):
                f.write(self.vocals_of(block, info.samplerate))
        return target
