"""Long recordings to utterances: voice activity detection, bounds, transcription, and an account of
every second of input.

Per source file, streamed: memory holds a block of audio, the open VAD region's probabilities and one
ASR batch of clips, whatever the file's length (`vad_stream`):
1. the audio is read in blocks and resampled to 16 kHz for silero-vad (its bundled model, nothing is
   downloaded); a line is logged every `progress_minutes` of audio read;
2. silero-vad finds speech, merging across pauses shorter than `merge_gap`, splitting speech longer
   than `max_seconds` at its longest pause, and padding edges by `pad`; each region between long pauses
   is cut, transcribed and written as soon as it closes;
3. a segment shorter than `min_seconds` joins its neighbour across a pause of at most `join_gap` when
   the result still fits; padded neighbours are cut apart at the middle of their overlap;
4. segments outside the bounds are dropped (`too_short`, `too_long`); the rest are transcribed by a
   local Whisper in batches and dropped below `min_asr_confidence` (`low_asr_confidence`);
5. what no segment covers is `no_speech`; a file that cannot be read is `failed_to_decode`, and so is the
   rest of a file whose decoding fails part way (what was read before is segmented). With `--separate` such a file is
   `failed_to_decode` as a whole (`separated`): its vocals stem would be incomplete.

With `speakers="diarize"` each file's speech spans are embedded and clustered into speakers
(`prep/diarize.py`) once the whole file is read: a span is split where its speaker changes, speech
where two voices overlap or whose speaker is in doubt is dropped (`overlap`, `uncertain_speaker`), a
turn shorter than `min_seconds` is dropped (`short_turn`) and joins only its own speaker's neighbour,
and every segment's speaker is `<source path relative to its input>:spk<k>`. Each speaker's centroid
goes to `file_speakers.jsonl`, which `prepare_data link-speakers` clusters over the corpus.

Counting is done in source samples, so for each file kept + dropped equals its length exactly.
The output folder never is, holds or lies inside an input, and input folders are searched without
descending into any segment output, so cut wavs are never segmented again.
Existing per-file transcripts are not aligned to segments: aligning long transcripts to VAD cuts
needs a forced aligner, which this step does not ship; transcription comes from `--asr`.
"""

from __future__ import annotations

import json
import logging
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile

from higgs_ds.errors import ConfigError, DataError
from higgs_ds.prep.diarize import ClusterRule, Diarization, SpanWindows, diarize
from higgs_ds.prep.sources import SEGMENT_OUTPUT, find_sources, part_of, refuse_same_names, relative_name
from higgs_ds.prep.vad_stream import VAD_RATE, Region, SpeechRegions, VadProbabilities, read_16k_blocks
from higgs_ds.quality.models import MODEL_RATE
from higgs_ds.quality.signal import resample
from higgs_ds.quality.speaker_encoder import DEFAULT_ENCODER, parse_encoder_spec, unit

log = logging.getLogger(__name__)

DROP_REASONS = ("no_speech", "too_short", "too_long", "low_asr_confidence", "failed_to_decode", "overlap",
                "uncertain_speaker", "short_turn")
FILE_SPEAKERS = "file_speakers.jsonl"  # diarize: one line per speaker of a file, with its centroid
SEPARATED = "separated"  # --separate: the vocals stems, under the output folder
CENTROID_SECONDS = 120.0  # pyannote: speech per speaker embedded for its centroid


@dataclass(frozen=True)
class SegmentConfig:
    inputs: tuple[str, ...]  # audio files, folders of them, or text files listing one path per line
    out: str
    asr: str | None = None  # local Whisper folder; without it only segments.jsonl and the wavs are written
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    merge_gap: float = 0.3  # pauses shorter than this never split speech
    join_gap: float = 1.0  # a too-short segment joins a neighbour across a pause up to this long
    pad: float = 0.1
    vad_threshold: float = 0.5
    min_asr_confidence: float = 0.4
    speaker_pattern: str | None = None  # regex with a `speaker` group, searched in the source path
    speakers: Literal["file", "diarize"] = "file"  # one speaker per file (or its path's), or diarized
    speaker_encoder: str = DEFAULT_ENCODER  # diarize: "resemblyzer" or "wavlm:PATH"
    num_speakers: int | None = None  # diarize: a known number of speakers per file
    speaker_threshold: float = 0.3  # diarize: cosine distance within which windows are one speaker
    diarizer: str | None = None  # diarize: "pyannote:PATH" runs a local pyannote-audio pipeline instead
    separate: str | None = None  # "demucs:PATH": keep the vocals stem of a local Demucs model before VAD
    part: tuple[int, int] | None = None  # (i, N): only part i of N of the input files
    language: str = "ar"
    device: str = "cpu"
    asr_batch_size: int = 8
    progress_minutes: float = 10.0  # a progress line per this much audio read

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds < self.max_seconds:
            raise ConfigError(f"need 0 < --min-seconds < --max-seconds, got {self.min_seconds}, {self.max_seconds}",
                              where="--min-seconds/--max-seconds")
        if self.asr and self.max_seconds > 30:
            raise ConfigError(f"--max-seconds {self.max_seconds} is longer than Whisper's 30 s window",
                              where="--max-seconds", fix="use at most 30 with --asr")
        if self.speaker_pattern and "(?P<speaker>" not in self.speaker_pattern:
            raise ConfigError(f"{self.speaker_pattern!r} has no (?P<speaker>...) group", where="--speaker-pattern")
        if self.speakers not in ("file", "diarize"):
            raise ConfigError(f"--speakers {self.speakers!r} is not 'file' or 'diarize'", where="--speakers")
        diarize_only = {"--num-speakers": self.num_speakers, "--diarizer": self.diarizer}
        if self.speakers != "diarize" and any(v is not None for v in diarize_only.values()):
            raise ConfigError(f"{', '.join(k for k, v in diarize_only.items() if v is not None)} needs --speakers "
                              "diarize", where="--speakers")
        if self.speakers == "diarize" and self.speaker_pattern:
            raise ConfigError("--speaker-pattern names one speaker per file, --speakers diarize finds them",
                              where="--speaker-pattern", fix="give one of the two")
        if self.num_speakers is not None and self.num_speakers < 1:
            raise ConfigError(f"--num-speakers {self.num_speakers} is below 1", where="--num-speakers")
        if not 0 < self.speaker_threshold < 2:
            raise ConfigError(f"--speaker-threshold {self.speaker_threshold} is not a cosine distance in (0, 2)",
                              where="--speaker-threshold")
        try:
            parse_encoder_spec(self.speaker_encoder)
        except ValueError as exc:
            raise ConfigError(str(exc), where="--speaker-encoder", fix="give resemblyzer or wavlm:FOLDER") from None
        for flag, value, kind in (("--diarizer", self.diarizer, "pyannote"), ("--separate", self.separate, "demucs")):
            if value is not None and (not value.startswith(f"{kind}:") or not Path(value[len(kind) + 1:]).is_dir()):
                raise ConfigError(f"{flag} {value!r} is not {kind}:FOLDER with an existing folder", where=flag,
                                  fix=f"copy the {kind} model to a local folder and give {kind}:<that folder>")
        if self.asr and not Path(self.asr).is_dir():
            raise ConfigError(f"{self.asr} is not a local folder", where="--asr",
                              fix="give a folder with a Whisper checkpoint (config.json, weights, processor files)")


@dataclass
class Segment:
    source: str
    start: int  # source samples
    end: int
    sample_rate: int
    vad_score: float
    reason: str | None = None  # None when kept
    text: str = ""
    asr_confidence: float | None = None
    speaker: str | None = None  # diarize: "<relative source>:spk<k>"

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / self.sample_rate

    def record(self) -> dict:
        return {"source": self.source, "start": round(self.start / self.sample_rate, 3),
                "end": round(self.end / self.sample_rate, 3), "vad_score": round(self.vad_score, 4),
                "asr_confidence": None if self.asr_confidence is None else round(self.asr_confidence, 4),
                "text": self.text, "kept": self.reason is None, "reason": self.reason, "speaker": self.speaker}


@dataclass
class FileAccount:
    source: str
    sample_rate: int
    samples: int
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> samples

    def seconds(self) -> dict:
        rate = self.sample_rate or 1
        return {"source": self.source, "seconds": self.samples / rate, "kept": self.kept / rate,
                "dropped": {k: v / rate for k, v in self.dropped.items()}}


def shape_segments(spans: list[tuple[int, int]], cfg: SegmentConfig, rate: int) -> list[tuple[int, int]]:
    """Join too-short spans to a neighbour where they fit, then cut padded overlaps at their middle."""
    min_len, max_len, join = (int(x * rate) for x in (cfg.min_seconds, cfg.max_seconds, cfg.join_gap))
    spans = sorted(spans)
    joined = True
    while joined:
        joined = False
        for i, (start, end) in enumerate(spans):
            if end - start >= min_len:
                continue
            neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(spans)]
            fits = [j for j in neighbours if max(spans[j][1], end) - min(spans[j][0], start) <= max_len
                    and max(spans[j][0], start) - min(spans[j][1], end) <= join]
            if fits:
                j = min(fits, key=lambda k: max(spans[k][0], start) - min(spans[k][1], end))
                spans[min(i, j)] = (min(spans[j][0], start), max(spans[j][1], end))
                del spans[max(i, j)]
                joined = True
                break
    for i in range(len(spans) - 1):
        (a_start, a_end), (b_start, b_end) = spans[i], spans[i + 1]
        if a_end > b_start:
            middle = (a_end + b_start) // 2
            spans[i], spans[i + 1] = (a_start, middle), (middle, b_end)
    return spans


class Segmenter:
    def __init__(self, cfg: SegmentConfig) -> None:
        self.cfg = cfg
        self.vad = VadProbabilities()
        self.asr = self.encoder = self.pipeline = self.separator = None
        self.rule = ClusterRule(threshold=cfg.speaker_threshold, num_speakers=cfg.num_speakers)
        self.file_speakers: dict[str, np.ndarray] = {}  # diarize: the last file's speaker -> centroid
        if cfg.speakers == "diarize":
            from higgs_ds.quality.speaker_encoder import load_speaker_encoder

            self.encoder = load_speaker_encoder(cfg.speaker_encoder, cfg.device)
        if cfg.diarizer:
            from higgs_ds.prep.pyannote_diarizer import load_pipeline

            self.pipeline = load_pipeline(cfg.diarizer, cfg.device)
        if cfg.separate:
            from higgs_ds.prep.separate import VocalsSeparator

            self.separator = VocalsSeparator(cfg.separate, cfg.device)
        if cfg.asr:
            from higgs_ds.prep.asr import BatchedWhisper

            self.asr = BatchedWhisper(cfg.asr, cfg.device, cfg.language, cfg.asr_batch_size)

    def speaker(self, source: Path) -> str:
        if not self.cfg.speaker_pattern:
            return source.stem
        match = re.search(self.cfg.speaker_pattern, str(source))
        if not match:
            raise DataError(f"--speaker-pattern {self.cfg.speaker_pattern!r} does not match", where=str(source),
                            fix="fix the pattern, or leave it out for one speaker per file")
        return match["speaker"]

    def find(self, source: Path, account: FileAccount, name: str | None = None) -> Iterator[Segment]:
        """The segments of one file in time order, each region's as soon as it closes (diarized: all once the
        file is read), transcripts not yet filled in. `account` gets the file's rate and length, and every
        sample no segment covers. `name`: the file's name in speaker labels (diarize)."""
        cfg = self.cfg
        self._spans, self._regions, self._region_samples = [], [], 0
        try:
            info = soundfile.info(str(source))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            log.warning("%s: cannot be decoded (%s); counted as failed_to_decode", source, exc)
            account.dropped["failed_to_decode"] = 0
            return
        rate, length, scale = info.samplerate, info.frames, info.samplerate / VAD_RATE
        account.sample_rate, account.samples = rate, length
        regions = SpeechRegions(cfg.vad_threshold, cfg.merge_gap, cfg.pad, cfg.max_seconds - 2 * cfg.pad, cfg.join_gap)
        self.vad.reset()
        blocks, read, streamed, failure, found = read_16k_blocks(source, rate), 0, 0, None, 0
        report_every = max(1, int(cfg.progress_minutes * 60 * rate))
        while True:
            try:
                frames, block = next(blocks)
            except StopIteration:
                break
            except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
                failure = exc
                break
            for region in regions.push(self.vad(block)):
                segments = self._cut(source, region, rate, length, account)
                found += len(segments)
                yield from segments
            if (read + frames) // report_every > read // report_every:
                log.info("%s: %.0f of %.0f min read, %d segments so far", source.name, (read + frames) / rate / 60,
                         length / rate / 60, found)
            read, streamed = read + frames, streamed + len(block)
        for region in regions.push(self.vad.flush()) + regions.finish(streamed):
            yield from self._cut(source, region, rate, length, account)
        if self.encoder is not None:
            yield from self._diarized(source, name or source.name, rate, account)
        covered = min(length, round(streamed * scale))  # where the last region ends, as `_cut` maps it
        if failure is not None:  # what was read before the failure is segmented; the rest is lost
            log.warning("%s: cannot be decoded after %.0f s (%s); the rest is counted as failed_to_decode",
                        source, covered / rate, failure)
        account.dropped["failed_to_decode" if failure is not None else "no_speech"] += length - covered

    def _cut(self, source: Path, region: Region, rate: int, length: int, account: FileAccount) -> list[Segment]:
        """A closed region's segments, in source samples; what none of them covers is `no_speech`."""
        cfg, scale = self.cfg, rate / VAD_RATE
        low, high = (min(length, round(x * scale)) for x in (region.start, region.end))
        spans = [(max(low, min(high, round(a * scale))), max(low, min(high, round(b * scale))))
                 for a, b in region.spans]
        if self.encoder is not None:
            self._embed(source, [(a, b) for a, b in spans if b > a], rate)
            self._regions.append((low, high, region))
            return []
        segments = []
        for start, end in shape_segments([(a, b) for a, b in spans if b > a], cfg, rate):
            seg = Segment(str(source), start, end, rate, region.score(int(start / scale), int(end / scale)))
            if seg.seconds < cfg.min_seconds:
                seg.reason = "too_short"
            elif seg.seconds > cfg.max_seconds:
                seg.reason = "too_long"
            segments.append(seg)
        account.dropped["no_speech"] += high - low - sum(s.end - s.start for s in segments)
        return segments

    def _embed(self, source: Path, spans: list[tuple[int, int]], rate: int) -> None:
        """A region's speech spans (padded neighbours cut apart at the middle) and, for our own diarizer,
        their window embeddings."""
        for i, (start, end) in enumerate(spans):
            if i and spans[i - 1][1] > start:
                start = (start + spans[i - 1][1]) // 2
            if i + 1 < len(spans) and spans[i + 1][0] < end:
                end = (end + spans[i + 1][0]) // 2
            if end <= start:
                continue
            if self.pipeline is not None:  # pyannote finds the speakers from the file itself
                self._spans.append(SpanWindows(start, end, np.zeros((0, 0)), np.zeros((0, 2), dtype=np.int64)))
                continue
            embeds, bounds = self.encoder.windows(_read_mono(source, start, end), rate)
            self._spans.append(SpanWindows(start, end, embeds, bounds + start))

    def _pyannote(self, source: Path, rate: int) -> Diarization:
        """pyannote's turns as pieces of our spans; each speaker's centroid from our encoder, over up to
        `CENTROID_SECONDS` of its longest pieces (so `link-speakers` compares like with like)."""
        from higgs_ds.prep.pyannote_diarizer import pieces_from_turns, speaker_turns

        pieces, labels = pieces_from_turns([(s.start, s.end) for s in self._spans],
                                           speaker_turns(self.pipeline, source), rate)
        sums, used = {}, Counter()
        for piece in sorted(pieces, key=lambda p: p.start - p.end):
            if piece.speaker is None or used[piece.speaker] >= CENTROID_SECONDS:
                continue
            embeds, _ = self.encoder.windows(_read_mono(source, piece.start, piece.end), rate)
            sums[piece.speaker] = sums.get(piece.speaker, 0) + embeds.sum(axis=0)
            used[piece.speaker] += (piece.end - piece.start) / rate
        centroids = np.stack([unit(sums[k]) for k in range(len(labels))]) if labels else np.zeros((0, 0))
        return Diarization(pieces, centroids)

    def _diarized(self, source: Path, name: str, rate: int, account: FileAccount) -> list[Segment]:
        """The file's segments from its diarization: each speaker's turns, shaped as `shape_segments` shapes
        spans but only ever joined to the same speaker; overlap, doubt and short turns dropped."""
        result: Diarization = self._pyannote(source, rate) if self.pipeline is not None else \
            diarize(self._spans, self.rule, rate, self.encoder.STEP_SECONDS)
        labels = {k: f"{name}:spk{k}" for k in range(len(result.centroids))}
        self.file_speakers = {labels[k]: result.centroids[k] for k in labels}
        scale, segments, run = rate / VAD_RATE, [], []

        lows = [low for low, _, _ in self._regions]

        def region_of(sample: int) -> int:  # regions tile the stream in order
            return bisect_right(lows, sample) - 1

        def close_run() -> None:
            for start, end in shape_segments([(p.start, p.end) for p in run], self.cfg, rate) if run else []:
                segments.append(self._segment(source, start, end, rate, scale, labels[run[0].speaker],
                                              region=self._regions[region_of(start)][2]))
            run.clear()

        for piece in result.pieces:
            if run and (piece.speaker != run[0].speaker or region_of(piece.start) != region_of(run[0].start)):
                close_run()
            if piece.speaker is not None:
                run.append(piece)
                continue
            segments.append(self._segment(source, piece.start, piece.end, rate, scale, None, piece.reason,
                                          self._regions[region_of(piece.start)][2]))
        close_run()
        account.dropped["no_speech"] += sum(h - low for low, h, _ in self._regions) - sum(s.end - s.start
                                                                                          for s in segments)
        self._spans, self._regions = [], []
        return sorted(segments, key=lambda s: s.start)

    def _segment(self, source: Path, start: int, end: int, rate: int, scale: float, speaker: str | None,
                 reason: str | None = None, region: Region | None = None) -> Segment:
        score = region.score(int(start / scale), int(end / scale)) if region is not None else 0.0
        seg = Segment(str(source), start, end, rate, score, reason, speaker=speaker)
        if reason is None and seg.seconds < self.cfg.min_seconds:
            seg.reason = "short_turn"
        elif reason is None and seg.seconds > self.cfg.max_seconds:
            seg.reason = "too_long"
        return seg

    def transcribe(self, segments: list[Segment], clips: list[np.ndarray]) -> None:
        """Fills in the transcripts of kept segments from their clips (at the source rate)."""
        if not self.asr or not segments:
            return
        wavs = [resample(clip, seg.sample_rate, MODEL_RATE) for seg, clip in zip(segments, clips, strict=True)]
        for seg, (text, confidence) in zip(segments, self.asr.transcribe(wavs), strict=True):
            seg.text, seg.asr_confidence = text, confidence
            if not text or confidence < self.cfg.min_asr_confidence:
                seg.reason = "low_asr_confidence"


def _read_mono(path: str | Path, start: int, end: int) -> np.ndarray:
    clip, _ = soundfile.read(str(path), start=start, stop=end, always_2d=True, dtype="float32")
    return clip.mean(axis=1)


def read_clip(seg: Segment) -> np.ndarray:
    """A segment's audio, mono at the source rate, read from its file alone."""
    return _read_mono(seg.source, seg.start, seg.end)


class SegmentWriter:
    """One file's segments, written as they come: every one to segments.jsonl, the kept ones to wavs/ and
    the manifest, transcribed `asr_batch_size` at a time (each clip read from the source once)."""

    def __init__(self, segmenter: Segmenter, source: Path, out: Path, seg_file, manifest: list[dict],
                 account: FileAccount, name: str) -> None:
        # source: the recording (its path names the speaker); clips are read from each segment's own file (a stem)
        self.segmenter, self.source, self.out, self.seg_file, self.manifest = segmenter, source, out, seg_file, manifest
        self.key = Path(name).with_suffix("").as_posix()  # the source's path under its input: unique in the corpus
        self.account, self.queue, self.index, self.kept, self._speaker = account, [], 0, 0, None
        self.batch = segmenter.cfg.asr_batch_size if segmenter.asr else 1
        self.speaker_seconds: Counter = Counter()  # diarize: kept seconds per speaker label

    def add(self, seg: Segment) -> None:
        self.queue.append(seg)
        if sum(s.reason is None for s in self.queue) >= self.batch:
            self.flush()

    def flush(self) -> None:
        kept = [s for s in self.queue if s.reason is None]
        clips = [read_clip(s) for s in kept]
        self.segmenter.transcribe(kept, clips)
        clip_of = {id(s): clip for s, clip in zip(kept, clips, strict=True)}
        for seg in self.queue:
            self.seg_file.write(json.dumps(seg.record(), ensure_ascii=False) + "\n")
            name, self.index = f"{self.key.replace('/', '__')}_{self.index:04d}", self.index + 1
            if seg.reason:
                self.account.dropped[seg.reason] += seg.end - seg.start
                continue
            self.account.kept += seg.end - seg.start
            self.kept += 1
            wav = Path("wavs") / self.key / f"{name}.wav"
            (self.out / wav).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(self.out / wav, clip_of[id(seg)], seg.sample_rate)
            if seg.speaker is not None:
                self.speaker_seconds[seg.speaker] += seg.seconds
            if self.segmenter.asr:
                self._speaker = seg.speaker or self._speaker or self.segmenter.speaker(self.source)
                self.manifest.append({"id": name, "audio": str(wav), "text": seg.text,
                                      "speaker": seg.speaker or self._speaker})
        self.queue.clear()


def separated(segmenter: Segmenter, source: Path, out: Path, name: str, account: FileAccount) -> Path | None:
    """What is cut: the recording, or with `--separate` its vocals stem. None when the stem cannot be made
    because decoding failed part way: the whole file is then `failed_to_decode` (an incomplete stem, or the
    unseparated recording, would be cut silently otherwise). A file that cannot be opened is left to `find`,
    which counts it so."""
    if segmenter.separator is None:
        return source
    from higgs_ds.prep.separate import Undecodable

    try:
        return segmenter.separator.write_vocals(source, (out / SEPARATED / name).with_suffix(".wav"))
    except Undecodable as exc:
        if exc.samples is None:
            return source
        log.warning("%s: cannot be decoded part way (%s); with --separate the whole file is counted as "
                    "failed_to_decode", source, exc.cause)
        account.sample_rate, account.samples = exc.rate, exc.samples
        account.dropped["failed_to_decode"] = exc.samples
        return None


def segment_recordings(cfg: SegmentConfig) -> dict:
    """Writes wavs/, segments.jsonl, manifest.jsonl (with --asr) and segment_summary.json under `cfg.out`."""
    out = SEGMENT_OUTPUT.check(cfg.out, inputs=cfg.inputs)
    sources = find_sources(cfg.inputs, out)
    refuse_same_names(sources, cfg.inputs)
    sources = part_of(sources, cfg.part)
    (SEGMENT_OUTPUT.create(out) / "wavs").mkdir(exist_ok=True)
    segmenter = Segmenter(cfg)
    accounts, manifest_lines, kept_segments = [], [], 0
    diarized = cfg.speakers == "diarize"
    with open(out / "segments.jsonl", "w", encoding="utf-8") as seg_file, \
            open(out / FILE_SPEAKERS, "w", encoding="utf-8") if diarized else nullcontext() as speakers_file:
        for source in sources:
            account, name = FileAccount(str(source), 0, 0), relative_name(source, cfg.inputs)
            writer = SegmentWriter(segmenter, source, out, seg_file, manifest_lines, account, name)
            audio = separated(segmenter, source, out, name, account)  # segments hold it: clips are cut from it
            for seg in segmenter.find(audio, account, name) if audio is not None else ():
                writer.add(seg)
            writer.flush()
            if speakers_file is not None:
                _write_file_speakers(speakers_file, source, segmenter, writer.speaker_seconds)
            kept_segments += writer.kept
            if account.kept + sum(account.dropped.values()) != account.samples:  # a bug, never bad input
                raise AssertionError(f"{source}: seconds do not add up: {account}")
            accounts.append(account)
    if segmenter.asr:
        with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in manifest_lines)
    summary = summarize(accounts, kept_segments, cfg)
    (out / "segment_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return summary


def _write_file_speakers(f, source: Path, segmenter: Segmenter, kept: Counter) -> None:
    """One line per speaker of the file that kept any speech: its centroid, for `link-speakers`."""
    for label, centroid in segmenter.file_speakers.items():
        if kept[label] > 0:
            f.write(json.dumps({"speaker": label, "source": str(source), "seconds": round(kept[label], 3),
                                "encoder": segmenter.cfg.speaker_encoder,
                                "centroid": [round(float(x), 6) for x in centroid]}) + "\n")
    segmenter.file_speakers = {}


def summarize(accounts: list[FileAccount], kept_segments: int, cfg: SegmentConfig) -> dict:
    per_file = [a.seconds() for a in accounts]
    dropped = Counter()
    for row in per_file:
        dropped.update(row["dropped"])
    return {"files": len(accounts), "input_seconds": sum(r["seconds"] for r in per_file),
            "kept_seconds": sum(r["kept"] for r in per_file), "kept_segments": kept_segments,
            "dropped_seconds": {reason: dropped.get(reason, 0.0) for reason in DROP_REASONS},
            "config": asdict(cfg), "per_file": per_file}
