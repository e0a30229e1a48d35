"""Score a folder of generated wavs against a manifest: prints a table (mean and 95% interval per
metric) and writes the same numbers to JSON.

    python launch/evaluate.py runs/demo/generated --manifest data/demo/eval.jsonl \
        --whisper /models/whisper-large-v3 --wavlm /models/wavlm-base-plus-sv --out scores.json

The manifest is a training manifest (docs/data.md, read by `higgs_ds.data.manifest`) whose rows have
``audio``: a reference recording of the text in the target voice, relative to the manifest's folder;
the demo's ``eval.jsonl`` is one. The generated audio for a row is ``<folder>/<id>.wav``. Metrics (see
`higgs_ds.quality.scorer`): speaker similarity (resemblyzer; WavLM with --wavlm), DNSMOS, MCD against
the reference, and WER/CER with a local Whisper (--whisper). Rows without a generated wav are listed
as missing, not dropped silently. Nothing in the generated folder is replaced but its scores.json; --out
elsewhere must be a new file or an earlier evaluation's scores, never an input (`higgs_ds.output_guard`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from higgs_ds.cli_options import add_scorer_args, scorer_config
from higgs_ds.codec import load_audio
from higgs_ds.data.manifest import BadSampleError, ManifestEntry, read_manifest
from higgs_ds.errors import ArgumentParser, DataError, run_cli
from higgs_ds.output_guard import OutputKind
from higgs_ds.quality.scorer import ScorerConfig, aggregate, build_scorer, format_table, summarize, write_scores

log = logging.getLogger(__name__)
SCORES = "scores.json"
# the one file it may add to the generated folder; anywhere else a new file or an earlier evaluation's
EVALUATE_OUTPUT = OutputKind("evaluate", adds=SCORES)


def references(path: Path) -> list[ManifestEntry]:
    """The manifest's rows, each with a reference recording; a bad row is a DataError naming its line."""
    if not path.is_file():
        raise DataError(f"manifest {path} is {'a directory' if path.is_dir() else 'missing'}", where="--manifest",
                        fix="give the JSON-lines file (the demo's is data/demo/eval.jsonl)")
    try:
        entries, _ = read_manifest(path, skip_bad=False)
    except BadSampleError as exc:
        raise DataError(str(exc), fix="see docs/data.md, 'Manifest format'") from None
    for entry in entries:
        if entry.audio is None:
            raise DataError(f"sample {entry.id!r} has codes, not a reference recording", where=entry.source,
                            fix="give 'audio', relative to the manifest's folder")
    if not entries:
        raise DataError(f"{path} has no rows", where="--manifest", fix="give a manifest with id, text, audio rows")
    return entries


def evaluate(generated: Path, manifest: Path, cfg: ScorerConfig) -> dict:
    scorer = build_scorer(cfg)
    per_utt, missing = {}, []
    for entry in references(manifest):
        wav_path = generated / f"{entry.id}.wav"
        if not wav_path.is_file():
            missing.append(entry.id)
            continue
        wav, sr = load_audio(wav_path)
        ref, ref_sr = load_audio(entry.audio)
        per_utt[entry.id] = scorer.score_one(wav.numpy(), sr, entry.text, ref.numpy(), ref_sr)
    if not per_utt:
        raise DataError(f"none of the {len(missing)} manifest ids has a wav in {generated}", where="generated",
                        fix="give the folder generation wrote <id>.wav files to")
    rows = list(per_utt.values())
    corpus = {k: v for k, v in aggregate(rows).items() if k in ("wer", "cer")}
    return {"generated": str(generated), "manifest": str(manifest), "scored": len(rows), "missing": missing,
            "summary": summarize(rows), "corpus": corpus, "per_utterance": per_utt}


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generated", type=Path, help="folder with <id>.wav per manifest row")
    p.add_argument("--manifest", type=Path, required=True, help="JSON lines: id, text, audio (reference recording)")
    p.add_argument("--out", type=Path, help="JSON output (default: <generated>/scores.json); a new file or an "
                                            "earlier evaluation's, outside the inputs")
    add_scorer_args(p)
    a = p.parse_args(argv)
    result = evaluate(a.generated, a.manifest, check_inputs(a))
    print(format_table(result["summary"], result["corpus"]))
    if result["missing"]:
        print(f"missing: {len(result['missing'])} manifest rows have no wav ({', '.join(result['missing'][:5])}...)")
    out = a.out or a.generated / SCORES
    out.parent.mkdir(parents=True, exist_ok=True)
    write_scores(out, result)
    log.info("scores -> %s", out)
    return result


def check_inputs(a: argparse.Namespace) -> ScorerConfig:
    """Folders, manifest and metric models, before any metric model is loaded: the scorer's config."""
    if not a.generated.is_dir():
        raise DataError(f"{a.generated} is not a folder", where="generated", fix="give the folder of generated wavs")
    references(a.manifest)
    cfg = scorer_config(a)
    EVALUATE_OUTPUT.check_file(a.out or a.generated / SCORES, inputs=(a.generated, a.manifest), is_own=_scores_file)
    return cfg


def _scores_file(path: Path) -> bool:
    """Whether `path` holds an earlier evaluation's scores (replaced by this one)."""
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(scores, dict) and {"scored", "per_utterance"} <= scores.keys()


if __name__ == "__main__":
    sys.exit(run_cli(main))
