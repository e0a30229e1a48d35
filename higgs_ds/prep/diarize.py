"""Who speaks when inside one recording, from speaker embeddings of windows along its speech.

Per file, after voice activity detection (`segment.py`), in memory that grows with the speech's length
only by one embedding per window (1 KB per 0.8 s of speech: 14 MB for 3 hours), never with its square:
1. every speech span is embedded in windows of 1.6 s every 0.8 s (`speaker_encoder.SpeakerEmbedder.windows`);
2. a span's consecutive windows are grouped into chunks while they stay within `threshold` (cosine
   distance) of the chunk's mean: a chunk is a stretch of one voice, and a span holds several when the
   speaker changes without a pause;
3. the chunks are clustered (average linkage on cosine distance, cut at `threshold`, or into
   `num_speakers` clusters): the longest `max_units` chunks at most, the rest joins its nearest
   cluster, so the distance matrix has a fixed bound whatever the file's length. A cluster with less
   than `min_cluster_seconds` of speech is no speaker (a mixed or odd chunk) and its windows are judged
   against the others;
4. every window is judged against the two nearest centroids: `overlap` when its embedding is a blend
   of both with the smaller share at least `overlap_share` (`blend_share`), `uncertain_speaker` when
   it is not `margin` closer to the nearest than to the next or not within `threshold` of it, else
   the nearest's speech. Each window speaks for the 0.8 s around its centre; an overlap window drops
   all that it and its two neighbours hear (3.2 s);
5. where the speaker changes inside a span, half a window-step either side of the change is dropped as
   `uncertain_speaker` (a window there hears both voices), and runs of one speaker are the turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from higgs_ds.quality.speaker_encoder import unit

OVERLAP, UNCERTAIN = "overlap", "uncertain_speaker"


@dataclass(frozen=True)
class ClusterRule:
    threshold: float = 0.3  # cosine distance: one speaker within it (GE2E: same voice 0.05-0.2, another 0.3-0.6)
    num_speakers: int | None = None  # a known count: cluster into exactly this many
    margin: float = 0.04  # a window's nearest centroid must be this much closer than the next
    overlap_share: float = 0.15  # a window that is at least this much a second speaker hears an overlap
    min_cluster_seconds: float = 2.0
    max_units: int = 2000  # chunks clustered at once: bounds the distance matrix (16 MB)


@dataclass
class SpanWindows:
    """One speech span of a file (source samples) and the embeddings of the windows along it."""

    start: int
    end: int
    embeds: np.ndarray  # [n, D] unit rows
    bounds: np.ndarray  # [n, 2] window bounds, absolute source samples


@dataclass
class Piece:
    """A stretch of a span: one speaker's (`speaker` its cluster) or dropped with `reason`."""

    start: int
    end: int
    speaker: int | None = None
    reason: str | None = None


@dataclass
class Diarization:
    pieces: list[Piece]  # tiling every span, in time order
    centroids: np.ndarray  # [k, D] unit rows, one per speaker
    seconds: dict[int, float] = field(default_factory=dict)  # speaker -> seconds of its pieces


def chunks(span: SpanWindows, threshold: float) -> list[tuple[int, int]]:
    """[first, end) window ranges of stretches of one voice along a span."""
    out, first, total = [], 0, span.embeds[0].copy()
    for i in range(1, len(span.embeds)):
        if float(unit(total) @ span.embeds[i]) < 1 - threshold:
            out.append((first, i))
            first, total = i, span.embeds[i].copy()
        else:
            total += span.embeds[i]
    return out + [(first, len(span.embeds))]


def cluster(units: np.ndarray, weights: np.ndarray, rule: ClusterRule) -> np.ndarray:
    """Cluster index per unit row: average linkage on cosine distance over the `max_units` heaviest units,
    the others assigned to the nearest resulting centroid."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(units) == 1:
        return np.zeros(1, dtype=np.int64)
    chosen = np.sort(np.argsort(-weights, kind="stable")[:rule.max_units])
    tree = linkage(units[chosen].astype(np.float64), method="average", metric="cosine")
    if rule.num_speakers:
        found = fcluster(tree, t=min(rule.num_speakers, len(chosen)), criterion="maxclust")
    else:
        found = fcluster(tree, t=rule.threshold, criterion="distance")
    labels = np.full(len(units), -1, dtype=np.int64)
    labels[chosen] = found - 1
    rest = np.flatnonzero(labels < 0)
    if len(rest):
        labels[rest] = np.argmax(units[rest] @ centroids_of(units, weights, labels).T, axis=1)
    return labels


def centroids_of(embeds: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    count = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    return unit(np.stack([(embeds[labels == k] * weights[labels == k, None]).sum(0) for k in range(count)])) \
        if count else np.zeros((0, embeds.shape[1]), dtype=np.float32)


def blend_share(best: float, second: float, between: float) -> float:
    """The smaller weight, as a share, of the blend of two unit centroids that has the window's cosine
    similarities `best` and `second` to them (`between`: their own similarity). A window of one voice
    reads near 0 (measured: -0.1 to 0.03 on espeak-ng voices), one that hears two voices well above."""
    det = 1 - between * between
    if det < 1e-3:
        return 0.0
    a, b = (best - between * second) / det, (second - between * best) / det
    return float(max(b, 0.0) / max(a + max(b, 0.0), 1e-6))


def judge(embeds: np.ndarray, centroids: np.ndarray, rule: ClusterRule) -> list[int | str]:
    """Per window: its speaker, OVERLAP (a blend of two speakers) or UNCERTAIN (near no speaker, or
    near two alike)."""
    if not len(centroids):
        return [UNCERTAIN] * len(embeds)
    sims, between = embeds @ centroids.T, centroids @ centroids.T
    out = []
    for row in sims:
        ranks = np.argsort(-row)
        first = int(ranks[0])
        if len(ranks) > 1:
            second = int(ranks[1])
            if blend_share(row[first], row[second], between[first, second]) >= rule.overlap_share:
                out.append(OVERLAP)
                continue
            if row[first] - row[second] < rule.margin:
                out.append(UNCERTAIN)
                continue
        out.append(first if row[first] >= 1 - rule.threshold else UNCERTAIN)
    return out


_CODES = {UNCERTAIN: -1, OVERLAP: -2}
_REASONS = {code: reason for reason, code in _CODES.items()}


def span_pieces(span: SpanWindows, states: list[int | str], guard: int) -> list[Piece]:
    """The span tiled exactly by pieces. Each window speaks for the stretch between the midpoints to its
    neighbours' centres; a window that hears two voices drops all it and its two neighbours hear as
    OVERLAP (a neighbour that shares half of it may still read as one voice); `guard` samples either
    side of a direct change from one speaker to another are UNCERTAIN."""
    codes = np.empty(span.end - span.start, dtype=np.int32)  # one span: at most --max-seconds of samples
    centres = span.bounds.mean(axis=1) - span.start
    edges = [0, *[int(round((a + b) / 2)) for a, b in zip(centres[:-1], centres[1:], strict=True)], len(codes)]
    for state, start, end in zip(states, edges[:-1], edges[1:], strict=True):
        codes[max(start, 0):max(end, 0)] = state if isinstance(state, int) else _CODES[state]
    bounds = span.bounds - span.start
    for i, state in enumerate(states):
        if state == OVERLAP:
            start, end = bounds[max(i - 1, 0), 0], bounds[min(i + 1, len(bounds) - 1), 1]
            codes[max(start, 0):max(end, 0)] = _CODES[OVERLAP]
    changes = np.flatnonzero((codes[1:] != codes[:-1]) & (codes[1:] >= 0) & (codes[:-1] >= 0)) + 1
    for at in changes:
        around = codes[max(at - guard, 0):at + guard]
        around[around >= 0] = _CODES[UNCERTAIN]
    cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    pieces = []
    for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(codes)], strict=True):
        code = int(codes[start])
        pieces.append(Piece(span.start + start, span.start + end, code if code >= 0 else None,
                            None if code >= 0 else _REASONS[code]))
    return pieces


def diarize(spans: list[SpanWindows], rule: ClusterRule, rate: int, step_seconds: float) -> Diarization:
    """Speakers of a file's spans: pieces tiling each span exactly, and the speakers' centroids."""
    spans = [s for s in spans if len(s.embeds)]
    if not spans:
        return Diarization([], np.zeros((0, 0), dtype=np.float32))
    units, weights = [], []
    for span in spans:
        for first, end in chunks(span, rule.threshold):
            units.append(unit(span.embeds[first:end].sum(0)))
            weights.append(end - first)
    units, weights = np.stack(units), np.asarray(weights, dtype=np.float64)
    labels = cluster(units, weights, rule)
    sizes = np.bincount(labels, weights=weights) * step_seconds  # a window speaks for one step of audio
    keep = np.flatnonzero(sizes >= rule.min_cluster_seconds)
    if not len(keep) and len(sizes):
        keep = np.array([int(np.argmax(sizes))])
    centroids = centroids_of(units, weights, labels)[keep]
    guard = int(step_seconds * rate / 2)
    pieces = [p for span in spans for p in span_pieces(span, judge(span.embeds, centroids, rule), guard)]
    # speakers numbered by first appearance, so labels read in time order
    order = {}
    for piece in pieces:
        if piece.speaker is not None:
            order.setdefault(piece.speaker, len(order))
    for piece in pieces:
        if piece.speaker is not None:
            piece.speaker = order[piece.speaker]
    centroids = centroids[sorted(order, key=order.get)] if order else centroids[:0]
    seconds = {}
    for piece in pieces:
        if piece.speaker is not None:
            seconds[piece.speaker] = seconds.get(piece.speaker, 0.0) + (piece.end - piece.start) / rate
    return Diarization(pieces, centroids, seconds)
