"""Demucs models saved in the folder layout `demucs.pretrained.get_model(name, repo=FOLDER)` reads: a tiny
random HTDemucs (the real architecture; its stems are noise), and a pass-through whose vocals stem is its
input, for tests that need speech in the stem."""

from pathlib import Path

import torch

SOURCES = ["drums", "bass", "other", "vocals"]


class PassVocals(torch.nn.Module):
    """[batch, channels, time] -> [batch, sources, channels, time]: the mix as vocals, silence elsewhere."""

    def __init__(self, samplerate: int = 16_000, audio_channels: int = 1, segment: float = 4.0) -> None:
        super().__init__()
        self.sources, self.samplerate, self.audio_channels, self.segment = SOURCES, samplerate, audio_channels, segment
        self.gain = torch.nn.Parameter(torch.ones(1))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = mix.new_zeros(mix.shape[0], len(self.sources), *mix.shape[1:])
        out[:, self.sources.index("vocals")] = mix * self.gain
        return out


def save_demucs(folder: Path, rate: int, passthrough: bool = False) -> Path:
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    if passthrough:
        klass, kwargs = PassVocals, dict(samplerate=rate)
    else:
        klass, kwargs = HTDemucs, dict(sources=SOURCES, channels=4, depth=2, nfft=256, t_layers=1, t_heads=1,
                                       dconv_comp=2, samplerate=rate, segment=1)
    model = klass(**kwargs)
    folder.mkdir(parents=True)
    torch.save({"klass": klass, "args": (), "kwargs": kwargs, "state": model.state_dict()}, folder / "tiny.th")
    return folder
