"""Build WebDataset shards for higgs-ds.

    # real data: a JSONL manifest (see README.md, "Manifest format") -> shards + shards.json, encoded with
    # the Higgs Audio v2 tokenizer (a local folder; transformers or Boson layout) or a DAC weights file
    python launch/prepare_data.py build --manifest train.jsonl --out data/train \
        --codec-path /ckpt/higgs-audio-v2-tokenizer --workers 8 [--skip-bad]

    # a manifest of precomputed codes: say what they are with the codec that made them or a spec file
    python launch/prepare_data.py build --manifest codes.jsonl --out data/train --audio-spec audio_spec.json

    # the built-in demo (espeak-ng Arabic + seeded small DAC + demo tokenizer), ~1-2 min on 2 cores
    python launch/prepare_data.py demo --out data/demo

Both commands are resumable: re-running skips shards that are already complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import DemoConfig, build_demo
from higgs_ds.data.importers import FORMAT_OPTIONS, ImportConfig, import_corpus
from higgs_ds.data.manifest import BadSampleError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="manifest -> shards")
    build.add_argument("--manifest", required=True)
    build.add_argument("--out", required=True)
    build.add_argument("--codec", choices=("auto", "dac", "higgs"), default="auto",
                       help="codec family (default: detected from --codec-path)")
    build.add_argument("--codec-path", "--codec-weights", dest="codec_path",
                       help="local codec: a Higgs Audio v2 tokenizer folder or a DAC weights file")
    build.add_argument("--codec-device", default="auto", help="auto (GPU when there is one) | cpu | cuda[:i]")
    build.add_argument("--codec-batch-size", type=int, default=8)
    build.add_argument("--num-codebooks", type=int, help="DAC only: quantizers to keep (default: all)")
    build.add_argument("--audio-spec", type=Path, help="JSON audio spec of precomputed codes (see audio_spec.json)")
    build.add_argument("--shard-size-mb", type=float, default=64.0)
    build.add_argument("--max-samples-per-shard", type=int, default=10_000)
    build.add_argument("--workers", type=int, default=1)
    build.add_argument("--skip-bad", action="store_true", help="reject bad samples to rejects.jsonl instead of failing")
    demo = sub.add_parser("demo", help="build the built-in Arabic demo dataset")
    demo.add_argument("--out", default="data/demo")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    _add_import_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "build":
            summary = _build(args)
        elif args.command == "import":
            summary = import_corpus(ImportConfig(**{k: v for k, v in vars(args).items() if k != "command"}))
        else:
            summary = build_demo(DemoConfig(out_dir=args.out, num_workers=args.workers, seed=args.seed))
    except BadSampleError as exc:
        print(f"error: {exc}\n(re-run with --skip-bad to write bad samples to rejects.jsonl instead)", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # bad settings, codec or spec: one clear line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def _build(args) -> dict:
    codec = spec = None
    if args.codec_path:
        codec = CodecConfig(path=args.codec_path, kind=args.codec, num_codebooks=args.num_codebooks,
                            device=args.codec_device, batch_size=args.codec_batch_size)
    if args.audio_spec:
        spec = AudioSpec.from_dict(json.loads(args.audio_spec.read_text(encoding="utf-8")), str(args.audio_spec))
    index = build_shards(BuildConfig(
        manifest=args.manifest, out_dir=args.out, codec=codec, spec=spec, shard_size_mb=args.shard_size_mb,
        max_samples_per_shard=args.max_samples_per_shard, num_workers=args.workers, skip_bad=args.skip_bad))
    summary = {k: index[k] for k in ("num_samples", "num_frames", "rejects", "reject_kinds")}
    summary["shards"] = len(index["shards"])
    summary["audio_spec"] = AudioSpec.from_dict(index["audio_spec"]).describe()
    return summary


def _add_import_parser(sub) -> None:
    imp = sub.add_parser("import", help="a corpus (hf, ljspeech, commonvoice, kaldi) -> train/eval manifests",
                         description="Writes train.jsonl, eval.jsonl, rejects.jsonl (every row not imported, with "
                         "a reason) and import_summary.json under --out. See README.md, 'Importing a corpus'.")
    imp.add_argument("--from", dest="fmt", required=True, choices=sorted(FORMAT_OPTIONS))
    imp.add_argument("--src", required=True, help="the corpus folder")
    imp.add_argument("--out", required=True, help="folder for the manifests (and decoded hf audio)")
    imp.add_argument("--split-by", choices=("utterance", "speaker"), default="utterance")
    imp.add_argument("--eval-fraction", type=float, default=0.0)
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--ref-pairing", choices=("none", "same-speaker"), default="none",
                     help="same-speaker: another utterance of the speaker (same split) as voice-cloning reference")
    imp.add_argument("--split", help="hf: dataset split; commonvoice: the .tsv to read (default validated)")
    imp.add_argument("--audio-column", help="hf (default audio)")
    imp.add_argument("--text-column", help="hf (default text)")
    imp.add_argument("--speaker-column", help="hf")
    imp.add_argument("--id-column", help="hf (default <split>_<row index>)")
    imp.add_argument("--speaker", help="ljspeech: the speaker id (default the folder name)")
    imp.add_argument("--audio-root", help="kaldi: folder that relative wav.scp paths start from (default --src)")


if __name__ == "__main__":
    sys.exit(main())
