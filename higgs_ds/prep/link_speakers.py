"""The speakers of many diarized recordings, linked across files: the same presenter in 40 episodes
becomes one speaker.

`prepare_data segment --speakers diarize` leaves, per output folder (one per `--part`), each file
speaker's centroid in `file_speakers.jsonl` (label `<file>:spk<k>`, kept seconds, encoder). Once every
part has finished, `link_speakers` clusters those centroids over the whole corpus (`diarize.cluster`:
average linkage on cosine distance, cut at `threshold`; the heaviest `max_units` at most, the rest
joined to their nearest cluster), with no audio read and nothing embedded again. It writes under `out`:
- `manifest.jsonl`: every segment folder's rows, `speaker` the linked id, `file_speaker` the per-file
  label, and a voice-cloning reference drawn within the linked speaker by the function
  `import --ref-pairing same-speaker` uses (`importers.common.pair_references`); a speaker with a single
  utterance has none, and is counted;
- `speakers.jsonl`: per linked speaker its id, files, file speakers, seconds, and the cosine distances
  of its file speakers' centroids to its own (mean, max);
- `rejects.jsonl`: the rows the manifest parser (`data/manifest.py:parse_line`) refuses, e.g. a text with
  no letter or digit (`where`, `id`, `kind`, `reason`, as `import` and `build` write them). They are
  checked before pairing, so no kept row gets a reference `build` would refuse;
- `link_summary.json`: the counts (rejected rows among them), seconds per speaker and a histogram of them.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from higgs_ds.data.importers.common import Accepted, pair_references
from higgs_ds.data.manifest import BadSampleError, parse_line
from higgs_ds.errors import ConfigError, DataError
from higgs_ds.output_guard import OutputKind
from higgs_ds.prep.diarize import ClusterRule, centroids_of, cluster
from higgs_ds.prep.segment import FILE_SPEAKERS
from higgs_ds.quality.speaker_encoder import unit

LINK_OUTPUT = OutputKind("prepare_data link-speakers", files=("speakers.jsonl",))
HISTOGRAM_BINS = ((0, "< 10 s"), (10, "10 s - 1 min"), (60, "1 - 10 min"), (600, "10 min - 1 h"), (3600, ">= 1 h"))


@dataclass(frozen=True)
class LinkConfig:
    segment_dirs: tuple[str, ...]
    out: str
    threshold: float = 0.2  # cosine distance between file speakers' centroids within which they are one
    seed: int = 0  # the reference draw
    max_units: int = 5000  # file speakers clustered at once (a 5000^2 / 2 distance matrix: 100 MB)

    def __post_init__(self) -> None:
        for folder in self.segment_dirs:
            if not (Path(folder) / FILE_SPEAKERS).is_file():
                raise DataError(f"{folder} has no {FILE_SPEAKERS}", where="SEGMENT_DIR",
                                fix="give folders written by `prepare_data segment --speakers diarize`")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _file_speakers(cfg: LinkConfig) -> list[dict]:
    rows = [row for folder in cfg.segment_dirs for row in _read_jsonl(Path(folder) / FILE_SPEAKERS)]
    encoders = sorted({row["encoder"] for row in rows})
    if len(encoders) > 1:
        raise ConfigError(f"the folders were diarized with different speaker encoders {encoders}", where="SEGMENT_DIR",
                          fix="segment every part with the same --speaker-encoder")
    seen = set()
    for row in rows:
        if row["speaker"] in seen:
            raise DataError(f"file speaker {row['speaker']!r} appears twice", where="SEGMENT_DIR",
                            fix="give each segment folder once (parts of one run hold different files)")
        seen.add(row["speaker"])
    return rows


def _manifest_rows(cfg: LinkConfig, out: Path) -> tuple[list[dict], list[dict]]:
    """Every folder's manifest rows that pass the manifest parser, audio paths made relative to `out`, and
    the rejects of those that do not (a row `build` would refuse must not become another's reference)."""
    rows, rejects, ids = [], [], set()
    for folder in map(Path, cfg.segment_dirs):
        manifest = folder / "manifest.jsonl"
        if not manifest.is_file():
            continue  # segmented without --asr: speakers only
        with open(manifest, encoding="utf-8") as f:
            lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
        for number, line in lines:
            try:
                entry = parse_line(line, number, manifest)
            except BadSampleError as exc:
                rejects.append(BadSampleError(f"{manifest}:{number}", exc.sample_id, exc.kind, exc.reason).as_reject())
                continue
            if entry.id in ids:
                raise DataError(f"segment id {entry.id!r} appears in two folders", where=str(folder),
                                fix="source files in different folders share a name: give them unique names")
            ids.add(entry.id)
            row = json.loads(line)
            row["audio"] = os.path.relpath(folder / row["audio"], out)
            rows.append(row)
    return rows, rejects


def histogram(seconds: list[float]) -> dict[str, int]:
    counts = dict.fromkeys((label for _, label in HISTOGRAM_BINS), 0)
    for value in seconds:
        counts[next(label for low, label in reversed(HISTOGRAM_BINS) if value >= low)] += 1
    return counts


def link_speakers(cfg: LinkConfig) -> dict:
    out = LINK_OUTPUT.create(LINK_OUTPUT.check(cfg.out, inputs=cfg.segment_dirs))
    speakers = _file_speakers(cfg)
    rows, rejects = _manifest_rows(cfg, out)
    if not speakers:
        raise DataError("no file speakers with kept speech in the segment folders", where="SEGMENT_DIR",
                        fix="check each folder's segment_summary.json")
    centroids = unit(np.array([row["centroid"] for row in speakers], dtype=np.float32))
    seconds = np.array([row["seconds"] for row in speakers], dtype=np.float64)
    labels = cluster(centroids, seconds, ClusterRule(threshold=cfg.threshold, max_units=cfg.max_units))
    linked = centroids_of(centroids, seconds, labels)
    totals = np.bincount(labels, weights=seconds, minlength=len(linked))
    order = np.argsort(-totals, kind="stable")  # ids by total seconds, the largest first
    name = {int(k): f"speaker{rank:05d}" for rank, k in enumerate(order)}
    link_of = {row["speaker"]: name[int(k)] for row, k in zip(speakers, labels, strict=True)}
    with open(out / "speakers.jsonl", "w", encoding="utf-8") as f:
        for k in order:
            members = np.flatnonzero(labels == k)
            distances = 1 - centroids[members] @ linked[k]
            f.write(json.dumps({"id": name[int(k)], "files": sorted({speakers[i]["source"] for i in members}),
                                "file_speakers": [speakers[i]["speaker"] for i in members],
                                "seconds": round(float(totals[k]), 3),
                                "centroid_distance": {"mean": round(float(distances.mean()), 4),
                                                      "max": round(float(distances.max()), 4)}},
                               ensure_ascii=False) + "\n")
    missing = sorted({row["speaker"] for row in rows} - set(link_of))
    if missing:
        raise DataError(f"manifest speakers {missing[:3]} have no centroid in {FILE_SPEAKERS}", where="SEGMENT_DIR",
                        fix="give the segment folders as `segment --speakers diarize` wrote them")
    for row in rows:
        row["file_speaker"], row["speaker"] = row["speaker"], link_of[row["speaker"]]
    items = [Accepted(row, row["id"], 0.0) for row in rows]
    unpaired = pair_references(items, cfg.seed)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(out / "rejects.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(reject, ensure_ascii=False) + "\n" for reject in rejects)
    per_speaker = {name[int(k)]: round(float(totals[k]), 3) for k in order}
    rows_per_speaker = defaultdict(int)
    for row in rows:
        rows_per_speaker[row["speaker"]] += 1
    summary = {"file_speakers": len(speakers), "speakers": len(linked), "rows": len(rows),
               "rejected": len(rejects), "reject_kinds": dict(sorted(Counter(r["kind"] for r in rejects).items())),
               "without_reference": unpaired,
               "speakers_with_one_row": sum(1 for n in rows_per_speaker.values() if n == 1),
               "seconds_per_speaker": per_speaker if len(per_speaker) <= 20 else
               dict(list(per_speaker.items())[:20]) | {"...": f"{len(per_speaker) - 20} more in speakers.jsonl"},
               "histogram_seconds_per_speaker": histogram(list(per_speaker.values()))}
    (out / "link_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return summary
