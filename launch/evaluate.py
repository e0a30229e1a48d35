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
from higgs_ds.errors import ArgumentParser, ConfigError, DataError, run_cli
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

log = logging.getLogger(__name__)


def read_manifest(path: Path) -> list[dict]:
    """Rows with id, text and an existing reference recording; a bad row is a DataError naming its line."""
    if not path.is_file():
        raise DataError(f"manifest {path} is {'a directory' if path.is_dir() else 'missing'}", where="--manifest",
                        fix="give the JSON-lines file (the demo's is data/demo/eval.jsonl)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 ({exc.reason} at byte {exc.start})", where="--manifest",
                        fix="save it as UTF-8 JSON lines") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", where=f"{path}:{n}", fix="one JSON object per line") from None
        missing = [k for k in ("id", "text", "audio") if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"manifest row lacks {missing}", where=f"{path}:{n}", fix="give id, text and audio")
        if not (path.parent / str(row["audio"])).is_file():
            raise DataError(f"reference recording {path.parent / str(row['audio'])} not found", where=f"{path}:{n}",
                            fix="'audio' is relative to the manifest's folder")
        rows.append(row)
    if not rows:
        raise DataError(f"{path} has no rows", where="--manifest", fix="give a manifest with id, text, audio rows")
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
    p.add_argument("--out", type=Path, help="JSON output (default: <generated>/scores.json)")
    add_scorer_args(p)
    a = p.parse_args(argv)
    check_inputs(a)
    result = evaluate(a.generated, a.manifest, scorer_config(a))
    print(format_table(result["summary"], result["corpus"]))
    if result["missing"]:
        print(f"missing: {len(result['missing'])} manifest rows have no wav ({', '.join(result['missing'][:5])}...)")
    out = a.out or a.generated / "scores.json"
    write_scores(out, result)
    log.info("scores -> %s", out)
    return result


def check_inputs(a: argparse.Namespace) -> None:
    """Folders, manifest and metric models, before any metric model is loaded."""
    if not a.generated.is_dir():
        raise DataError(f"{a.generated} is not a folder", where="generated", fix="give the folder of generated wavs")
    read_manifest(a.manifest)
    for flag, folder in (("--whisper", a.whisper), ("--wavlm", a.wavlm)):
        if folder is not None and not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"{folder} is not a local model folder (no config.json)", where=flag,
                              fix="copy the model there first; nothing is downloaded")
    if a.out is not None and a.out.is_dir():
        raise ConfigError(f"{a.out} is a folder", where="--out", fix="give a .json file path")


if __name__ == "__main__":
    sys.exit(run_cli(main))
