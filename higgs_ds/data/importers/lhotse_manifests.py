"""lhotse manifests: a ``CutSet`` (``*cuts*.jsonl.gz``) or a ``RecordingSet`` + ``SupervisionSet``
(``*recordings*.jsonl.gz`` + ``*supervisions*.jsonl.gz``), as lhotse's corpus recipes write them.

Each supervision is a row (id, text and speaker from the supervision). A supervision that covers a
whole single-channel recording file references that file; any other (an utterance inside a long
recording, one channel of several, a recording with transforms) is cut to its span by lhotse and
written as a wav under ``<out>/audio``. Rejected with a reason: a cut without supervisions, a
supervision without text, without audio, outside its recording, or of a mixed cut. lhotse is an
optional extra, imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from higgs_ds.data.importers.common import AudioArray, ImportConfig, SourceRow, reading
from higgs_ds.data.manifest import BadSampleError

_TOLERANCE_S = 1e-3  # lhotse's own tolerance when it matches supervisions to recordings


def _import_lhotse():
    try:
        import lhotse
    except ImportError:
        raise ImportError("--from lhotse needs the lhotse package: pip install 'higgs-ds[lhotse]' "
                          "(or pip install lhotse)") from None
    return lhotse


def _pick(folder: Path, kind: str, split: str | None) -> list[Path]:
    found = sorted(p for p in folder.glob(f"*{kind}*.jsonl*") if split is None or f"_{split}." in p.name)
    if len(found) > 1:
        raise ValueError(f"{folder} holds several {kind} manifests ({', '.join(p.name for p in found)}): "
                         "choose one with --split (e.g. --split train for *_train.jsonl.gz)")
    return found


def _load(cfg: ImportConfig, lhotse) -> tuple[object, Path, list[BadSampleError]]:
    """The cuts to read, the file rows are reported under, and supervisions no recording has."""
    src = Path(cfg.src)
    cuts = [src] if src.is_file() else _pick(src, "cuts", cfg.split)
    if cuts:  # read lazily, one cut at a time: a corpus's cuts need not fit in memory
        return lhotse.CutSet.from_jsonl_lazy(cuts[0]), cuts[0], []
    recordings, supervisions = _pick(src, "recordings", cfg.split), _pick(src, "supervisions", cfg.split)
    if not (recordings and supervisions):
        raise FileNotFoundError(f"{src}: no lhotse manifests{f' of split {cfg.split}' if cfg.split else ''} "
                                "(a *cuts*.jsonl.gz, or *recordings*.jsonl.gz + *supervisions*.jsonl.gz)")
    with reading(recordings[0], "the lhotse manifest"):
        recording_set = lhotse.RecordingSet.from_file(recordings[0])
    with reading(supervisions[0], "the lhotse manifest"):
        supervision_set = lhotse.SupervisionSet.from_file(supervisions[0])
    orphans = [BadSampleError(f"{supervisions[0].name}: {s.id}", s.id, "missing_audio",
                              f"no recording {s.recording_id!r} in {recordings[0].name}")
               for s in supervision_set if s.recording_id not in recording_set]
    cuts = lhotse.CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set)
    return cuts, recordings[0], orphans


def _whole_file(cut) -> Path | None:
    """The recording's file when the cut is all of a plain single-channel file, else None."""
    recording = cut.recording
    if (len(recording.sources) != 1 or recording.sources[0].type != "file" or recording.num_channels != 1
            or recording.transforms or cut.start > _TOLERANCE_S
            or abs(cut.duration - recording.duration) > _TOLERANCE_S):
        return None
    return Path(recording.sources[0].source)


def _row(cut, supervision, where: str) -> SourceRow | BadSampleError:
    sid = supervision.id
    if not (supervision.text or "").strip():
        return BadSampleError(where, sid, "missing_text", "supervision has no text")
    if type(cut).__name__ != "MonoCut":
        return BadSampleError(where, sid, "mixed_cut", f"a {type(cut).__name__} mixes several recordings: "
                              "import the recordings and supervisions it was made from")
    if not cut.has_recording:
        return BadSampleError(where, sid, "no_audio", "cut has no recording (features only)")
    if supervision.start < -_TOLERANCE_S or supervision.end > cut.duration + _TOLERANCE_S:
        return BadSampleError(where, sid, "span_outside_recording",
                              f"supervision {supervision.start:.3f}-{supervision.end:.3f} s lies outside its "
                              f"cut of {cut.duration:.3f} s of recording {cut.recording_id!r}")
    span = cut.truncate(offset=max(0.0, supervision.start), duration=supervision.duration,
                        keep_excessive_supervisions=False)
    audio = _whole_file(span)
    if audio is None:
        try:
            samples = span.load_audio()  # [channels, samples], resampled/transformed as the manifest says
        except Exception as exc:  # lhotse raises per audio backend: AudioLoadingError, RuntimeError, OSError
            return BadSampleError(where, sid, "unreadable_audio", f"recording {cut.recording_id!r}: {exc}")
        audio = AudioArray(samples.T, span.sampling_rate)
    return SourceRow(where, sid, supervision.text, audio, supervision.speaker)


def read_lhotse(cfg: ImportConfig) -> Iterator[SourceRow | BadSampleError]:
    lhotse = _import_lhotse()
    cuts, source, orphans = _load(cfg, lhotse)
    with reading(source, "the lhotse manifest"):  # lazy cuts: a damaged line fails while iterating
        for number, cut in enumerate(cuts, start=1):
            where = f"{source.name}:{number} ({cut.id})"
            if not cut.supervisions:
                yield BadSampleError(where, cut.id, "no_supervision", "cut has no supervision (no transcript)")
            for supervision in cut.supervisions:
                yield _row(cut, supervision, where)
    yield from orphans
