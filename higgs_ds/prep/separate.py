"""`segment --separate demucs:FOLDER`: the vocals stem of each recording, by a Demucs model read from a
local folder, written beside the output and segmented instead of the recording (broadcast speech often
has a music bed that VAD, the speaker encoder and later the codec would all hear).

The folder is what `demucs.pretrained.get_model(name, repo=FOLDER)` reads: a bag of models
(`<name>.yaml` naming signatures) and the models themselves (`<signature>[-<checksum>].th`), e.g. the
files of `htdemucs` copied by hand; nothing is downloaded. The recording is separated 60 s at a time at
the model's rate and channels and brought back to its own rate as mono, so the stem has exactly the
recording's length in samples (the accounting counts the recording's samples). Demucs is pinned in
requirements.txt and imported only here.

A recording that cannot be opened, or whose decoding fails part way, raises `Undecodable` (`segment`
counts it as `failed_to_decode`, the whole file when the failure came part way: its stem would be
incomplete); any other failure (the model running out of memory, a shape it cannot take) is an error
naming the recording. Either way no partial stem is left behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.errors import ConfigError
from higgs_ds.quality.signal import resample

BLOCK_SECONDS = 60


class Undecodable(Exception):
    """The recording cannot be opened (`samples` is None) or fails to decode part way (`samples`: its length)."""

    def __init__(self, source: Path, cause: Exception, samples: int | None, rate: int | None) -> None:
        self.cause, self.samples, self.rate = cause, samples, rate
        super().__init__(f"{source}: {cause}")


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
            # shifts=0: the default's one random time shift makes the stem differ from run to run, for no gain
            stems = apply_model(self.model, wav[None], shifts=0, device=self.device, progress=False, num_workers=0)
        vocals = resample(stems[0, self.vocals].mean(0).cpu().numpy(), model_rate, rate)
        out = np.zeros(len(block), dtype=np.float32)
        out[:min(len(out), len(vocals))] = vocals[:len(out)]
        return out

    def write_vocals(self, source: Path, target: Path) -> Path:
        """The vocals stem of `source`, written to `target` (WAV, float) at the source's rate."""
        try:
            info = soundfile.info(str(source))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise Undecodable(source, exc, None, None) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        blocks = soundfile.blocks(str(source), blocksize=BLOCK_SECONDS * info.samplerate, always_2d=True,
                                  dtype="float32")
        try:
            with soundfile.SoundFile(str(target), "w", info.samplerate, 1, "FLOAT") as f:
                while True:
                    try:
                        block = next(blocks)
                    except StopIteration:
                        break
                    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:  # as `segment` reads
                        raise Undecodable(source, exc, info.frames, info.samplerate) from exc
                    f.write(self.vocals_of(block, info.samplerate))
        except Undecodable:
            target.unlink(missing_ok=True)
            raise
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise RuntimeError(f"--separate failed on {source} ({type(exc).__name__}: {exc})") from exc
        return target
