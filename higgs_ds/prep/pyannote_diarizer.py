"""`segment --speakers diarize --diarizer pyannote:FOLDER`: a pyannote-audio pipeline from a local folder
(its `config.yaml` and the models it names; nothing is downloaded) says who speaks when, and its turns
become our pieces inside the silero-vad speech spans, so the accounting stays the same:
- where one pyannote speaker speaks, the piece is that speaker's;
- where two or more do, `overlap`; where silero hears speech and pyannote no speaker, `uncertain_speaker`.

pyannote-audio is an optional extra (`pip install -e .[pyannote]`, not installed by `make setup`),
imported only here, with its telemetry switched off before the import. It reads the whole file itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from higgs_ds.errors import ConfigError
from higgs_ds.prep.diarize import OVERLAP, UNCERTAIN, Piece


def load_pipeline(spec: str, device: str = "cpu"):
    """The pipeline of `pyannote:FOLDER`."""
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"  # before pyannote is imported: no usage telemetry
    try:
        from pyannote.audio import Pipeline
    except ImportError:
        raise ConfigError("--diarizer pyannote needs pyannote-audio, an optional extra", where="--diarizer",
                          fix="pip install -e '.[pyannote]', or leave --diarizer out for the built-in one") from None
    folder = Path(spec.partition(":")[2])
    fix = "give a folder with the pipeline's config.yaml and the models it names"
    if not (folder / "config.yaml").is_file():  # else pyannote would take the folder for a hub name
        raise ConfigError(f"{folder} has no config.yaml", where="--diarizer", fix=fix)
    pipeline = Pipeline.from_pretrained(folder)
    if pipeline is None:
        raise ConfigError(f"{folder} holds no pyannote pipeline", where="--diarizer", fix=fix)
    if device != "cpu":
        import torch

        pipeline.to(torch.device(device))
    return pipeline


def speaker_turns(pipeline, source: str | Path) -> list[tuple[float, float, str]]:
    """(start, end, label) in seconds, as the pipeline gives them (pyannote 4 wraps its annotation in an
    output whose `speaker_diarization` it is; pyannote 3 returns the annotation)."""
    output = pipeline(str(source))
    annotation = getattr(output, "speaker_diarization", output)
    return [(float(seg.start), float(seg.end), str(label)) for seg, _, label in annotation.itertracks(yield_label=True)]


def pieces_from_turns(spans: list[tuple[int, int]], turns: list[tuple[float, float, str]],
                      rate: int) -> tuple[list[Piece], list[str]]:
    """Pieces tiling each span exactly (source samples) and the speaker labels in order of first speech;
    a piece's `speaker` indexes that list."""
    edges = sorted({round(t * rate) for start, end, _ in turns for t in (start, end)})
    in_samples = [(round(start * rate), round(end * rate), label) for start, end, label in turns]
    labels: list[str] = []
    pieces: list[Piece] = []
    for low, high in spans:
        cuts = [low, *[e for e in edges if low < e < high], high]
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            active = {label for a, b, label in in_samples if a <= start and b >= end}
            speaker, reason = None, UNCERTAIN if not active else OVERLAP if len(active) > 1 else None
            if reason is None:
                (label,) = active
                if label not in labels:
                    labels.append(label)
                speaker = labels.index(label)
            last = pieces[-1] if pieces and pieces[-1].end == start else None
            if last and last.speaker == speaker and last.reason == reason:
                last.end = end
            else:
                pieces.append(Piece(start, end, speaker, reason))
    return pieces, labels
