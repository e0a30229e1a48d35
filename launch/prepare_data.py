"""Build WebDataset shards for higgs-ds.

    # real data: a JSONL manifest (see README.md, "Manifest format") -> shards + shards.json
    python launch/prepare_data.py build --manifest train.jsonl --out data/train \
        --codec-weights weights/dac_24khz.pth --workers 8 [--skip-bad]

    # the built-in demo (espeak-ng Arabic + seeded small DAC + demo tokenizer), ~1-2 min on 2 cores
    python launch/prepare_data.py demo --out data/demo

Both commands are resumable: re-running skips shards that are already complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.codec import CodecConfig
from higgs_ds.data.demo import DemoConfig, build_demo
from higgs_ds.data.manifest import BadSampleError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="manifest -> shards")
    build.add_argument("--manifest", required=True)
    build.add_argument("--out", required=True)
    build.add_argument("--codec", default="dac", help="codec kind (default: dac)")
    build.add_argument("--codec-weights", help="local codec weights; needed when the manifest has audio paths")
    build.add_argument("--codec-device", default="auto")
    build.add_argument("--num-codebooks", type=int, default=8)
    build.add_argument("--codebook-size", type=int, default=1024)
    build.add_argument("--shard-size-mb", type=float, default=64.0)
    build.add_argument("--max-samples-per-shard", type=int, default=10_000)
    build.add_argument("--workers", type=int, default=1)
    build.add_argument("--skip-bad", action="store_true", help="reject bad samples to rejects.jsonl instead of failing")
    demo = sub.add_parser("demo", help="build the built-in Arabic demo dataset")
    demo.add_argument("--out", default="data/demo")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "build":
            codec = None
            if args.codec_weights:
                codec = CodecConfig(kind=args.codec, weights=args.codec_weights, num_codebooks=args.num_codebooks,
                                    device=args.codec_device)
            index = build_shards(BuildConfig(
                manifest=args.manifest, out_dir=args.out, codec=codec, num_codebooks=args.num_codebooks,
                codebook_size=args.codebook_size, shard_size_mb=args.shard_size_mb,
                max_samples_per_shard=args.max_samples_per_shard, num_workers=args.workers, skip_bad=args.skip_bad))
            summary = {k: index[k] for k in ("num_samples", "num_frames", "rejects", "reject_kinds")}
            summary["shards"] = len(index["shards"])
        else:
            summary = build_demo(DemoConfig(out_dir=args.out, num_workers=args.workers, seed=args.seed))
    except BadSampleError as exc:
        print(f"error: {exc}\n(re-run with --skip-bad to write bad samples to rejects.jsonl instead)", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
