"""The playground's check on the demo run (`make playground-check`): the run served through the playground's
own logic (`higgs_ds.playground.Playground`, in process, no browser), every training sentence generated
greedily in its demo voice, its codes compared with the codes it was trained on; then a new sentence.

    python scripts/playground_demo_check.py runs/demo [--score] [--per-voice N] [--min-accuracy 0.99]

A sample trained with a voice-cloning reference gets that reference clip uploaded with its transcript (from the
demo's manifest beside the shards, `data/demo/train.jsonl`); one trained without gets zero-shot. Prints the
frame accuracy (share of frames whose every codebook matches, over the training length) per sentence and
their mean, and exits 1 when the mean is under --min-accuracy. Generations go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from higgs_ds.cli_options import bounded
from higgs_ds.data.shards import iter_tar_samples, list_shards, load_spec, tar_sample_to_utterance
from higgs_ds.errors import ArgumentParser, DataError, run_cli
from higgs_ds.playground import SPEAKER, UPLOAD, ZERO_SHOT, Playground, PlaygroundConfig, Request, Sampling
from higgs_ds.quality.scorer import ScorerConfig
from higgs_ds.train.audio_eval import compare_codes

NEW_SENTENCE = "ذهبت إلى السوق صباحا واشتريت خبزا طازجا."
GREEDY = Sampling(greedy=True, max_frames=1500)


def _parse(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", default=Path("runs/demo"), help="the demo run (default runs/demo)")
    p.add_argument("--per-voice", type=bounded(int, 1),
                   help="check the first N sentences of each speaker and prompt kind (zero-shot / reference) only")
    p.add_argument("--min-accuracy", type=bounded(float, 0, 1), default=0.99,
                   help="the mean frame accuracy below which the check fails")
    p.add_argument("--score", action="store_true", help="also DNSMOS and speaker similarity (slower)")
    return p.parse_args(argv)


def _training_samples(pg: Playground) -> list[tuple]:
    """(utterance, its manifest row) of every training sample, in shard order."""
    shards = pg.data_path("shards")
    if shards is None or not shards.is_dir():
        raise DataError(f"the run's training shards {shards} are not here", where=str(pg.source),
                        fix="run the check from the folder the demo was trained in (make demo)")
    manifest = shards.with_suffix(".jsonl")  # the demo's layout: data/demo/train.jsonl beside data/demo/train
    if not manifest.is_file():
        raise DataError(f"no manifest {manifest} beside the training shards", where=str(pg.source),
                        fix="this check is for the demo run (make data builds both)")
    rows = {r["id"]: r for r in map(json.loads, manifest.read_text(encoding="utf-8").splitlines())}
    spec = load_spec(shards)
    utts = [tar_sample_to_utterance(s, spec) for shard in list_shards(shards) for s in iter_tar_samples(shard)]
    return [(u, rows[u.id] | {"folder": manifest.parent}) for u in utts]


def _per_voice(samples: list[tuple], n: int) -> list[tuple]:
    """The first n samples of each (speaker, with or without a reference), in their order."""
    taken: dict[tuple, int] = {}
    out = []
    for utt, row in samples:
        voice = (utt.speaker, utt.ref_codes is None)
        if taken.get(voice, 0) < n:
            taken[voice] = taken.get(voice, 0) + 1
            out.append((utt, row))
    return out


def _request(utt, row) -> Request:
    if utt.ref_codes is None:
        return Request(utt.text, voice=ZERO_SHOT, scene=utt.scene, sampling=GREEDY)
    return Request(utt.text, voice=UPLOAD, upload=row["folder"] / row["ref_audio"], ref_text=row["ref_text"],
                   scene=utt.scene, sampling=GREEDY)


def _scores(gen) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in sorted(gen.scores.items()))


def main(argv=None) -> int:
    a = _parse(argv)
    with tempfile.TemporaryDirectory() as save_dir:
        pg = Playground(PlaygroundConfig(a.run, save_dir=Path(save_dir) / "playground",
                                         scorer=ScorerConfig(mcd=False) if a.score else None))
        samples = _training_samples(pg)
        if a.per_voice:
            samples = _per_voice(samples, a.per_voice)
        print(f"{a.run}: checkpoint {pg.default_tag()}, {len(samples)} training sentences, greedy", flush=True)
        accuracies = []
        for utt, row in samples:
            gen = pg.generate(_request(utt, row))
            cmp = compare_codes(torch.as_tensor(gen.codes), torch.as_tensor(utt.codes))
            accuracies.append(cmp["frame_acc"])
            voice = "zero-shot" if utt.ref_codes is None else "reference uploaded"
            print(f"{utt.id} {utt.speaker} ({voice}): frame accuracy {cmp['frame_acc']:.3f}, length ratio "
                  f"{cmp['length_ratio']:.3f} {_scores(gen)}", flush=True)
        mean = sum(accuracies) / len(accuracies)
        print(f"frame accuracy: mean {mean:.3f}, min {min(accuracies):.3f} over {len(accuracies)} training sentences")
        voices = pg.voices()
        new = pg.generate(Request(NEW_SENTENCE, voice=SPEAKER if voices else ZERO_SHOT,
                                  speaker=voices[0] if voices else None, sampling=GREEDY))
        print(f"new sentence in {voices[0] if voices else 'zero-shot'}: {new.frames} frames, "
              f"{'ended by the model' if new.finished else 'stopped by the ' + new.stopped_by} {_scores(new)}")
    if new.frames == 0 or mean < a.min_accuracy:
        print(f"FAIL: mean frame accuracy {mean:.3f} < {a.min_accuracy}" if mean < a.min_accuracy else
              "FAIL: the new sentence generated no frames", file=sys.stderr)
        return 1
    print(f"OK: mean frame accuracy {mean:.3f} >= {a.min_accuracy}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
