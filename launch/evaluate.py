"""Score a folder of generated wavs against a manifest: prints a table (mean and 95% interval per
metric) and writes the same numbers to JSON.

    python launch/evaluate.py runs/demo/generated --manifest data/demo/eval.jsonl \
        --whisper /models/whisper-large-v3 --wavlm /models/wavlm-base-plus-sv --out scores.json

The manifest is JSON lines with ``id``, ``text`` and ``audio`` (a reference recording of the text in
the target voice, relative to the manifest's folder); the demo's ``eval.jsonl`` has that layout. The
generated audio for a row is ``<folder>/<id>.wav``. Metrics (see `higgs_ds.inference.scoring`):
speaker similarity (resemblyzer; WavLM with --wavlm), DNSMOS, MCD against the reference, and WER/CER
with a local Whisper (--whisper). Rows without a generated wav are listed as missing, not dropped silently.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from higgs_ds.codec import load_audio
from higgs_ds.inference.scoring import (
    ScorerConfig,
    add_scorer_args,
    aggregate,
    build_scorer,
    format_table,
    scorer_config,
    summarize,
    write_scores,
)

log = logging.getLogger("higgs_ds.evaluate")


def read_manifest(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("id", "text", "audio") if k not in row]
        if missing:
            raise ValueError(f"{path}:{n}: manifest row lacks {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty manifest")
    return rows


def evaluate(generated: Path, manifest: Path, cfg: ScorerConfig) -> dict:
    scorer = build_scorer(cfg)
    per_utt, missing = {}, []
    for row in read_manifest(manifest):
        wav_path = generated / f"{row['id']}.wav"
        if not wav_path.is_file():
            missing.append(row["id"])
            continue
        wav, sr = load_audio(wav_path)
        ref, ref_sr = load_audio(manifest.parent / row["audio"])
        per_utt[row["id"]] = scorer.score_one(wav.numpy(), sr, row["text"], ref.numpy(), ref_sr)
    if not per_utt:
        raise FileNotFoundError(f"none of the {len(missing)} manifest ids has a wav in {generated}")
    rows = list(per_utt.values())
    corpus = {k: v for k, v in aggregate(rows).items() if k in ("wer", "cer")}
    return {"generated": str(generated), "manifest": str(manifest), "scored": len(rows), "missing": missing,
            "summary": summarize(rows), "corpus": corpus, "per_utterance": per_utt}


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generated", type=Path, help="folder with <id>.wav per manifest row")
    p.add_argument("--manifest", type=Path, required=True, help="JSON lines: id, text, audio (reference recording)")
    p.add_argument("--out", type=Path, help="JSON output (default: <generated>/scores.json)")
    add_scorer_args(p)
    a = p.parse_args(argv)
    if not a.generated.is_dir():
        sys.exit(f"{a.generated} is not a folder")
    result = evaluate(a.generated, a.manifest, scorer_config(a))
    print(format_table(result["summary"], result["corpus"]))
    if result["missing"]:
        print(f"missing: {len(result['missing'])} manifest rows have no wav ({', '.join(result['missing'][:5])}...)")
    out = a.out or a.generated / "scores.json"
    write_scores(out, result)
    log.info("scores -> %s", out)
    return result


if __name__ == "__main__":
    main()
