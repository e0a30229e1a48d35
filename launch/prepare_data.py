"""Build WebDataset shards for higgs-ds.

    # real data: a JSONL manifest (see docs/data.md, "Manifest format") -> shards + shards.json, encoded with
    # the Higgs Audio v2 tokenizer (a local folder; transformers or Boson layout) or a DAC weights file
    python launch/prepare_data.py build --manifest train.jsonl --out data/train \
        --codec-path /ckpt/higgs-audio-v2-tokenizer --workers 8 [--skip-bad]

    # every GPU of a node (one codec worker each), or one part of a multi-node build, merged afterwards
    python launch/prepare_data.py build --manifest train.jsonl --out data/train.parts/0 --part 0/2 \
        --codec-path /ckpt/higgs-audio-v2-tokenizer --codec-device cuda
    python launch/prepare_data.py merge --out data/train data/train.parts/0 data/train.parts/1

    # a manifest of precomputed codes: say what they are with the codec that made them or a spec file
    python launch/prepare_data.py build --manifest codes.jsonl --out data/train --audio-spec audio_spec.json

    # the built-in demo (espeak-ng Arabic + seeded small DAC + demo tokenizer), ~1-2 min on 2 cores
    python launch/prepare_data.py demo --out data/demo

    # preference pairs for DPO: N candidates per prompt from a run, scored, best vs worst (docs/rewards.md)
    python launch/prepare_data.py preferences --from runs/sft --manifest prompts.jsonl --candidates 8 \
        --rewards cer=1,sim=1,stop=0.5 --whisper /models/whisper-small --out data/pairs [--part 0/2]

    # check the transcript normalisation by eye: numbers, times and units read out as words
    echo "في 2024 ارتفع السعر 5%" | python launch/prepare_data.py normalize-text

Both commands are resumable: re-running skips shards that are already complete. Every subcommand writes
into its own --out only: a folder that is, holds or lies inside one of its inputs, or that another command
wrote, is refused before any work (higgs_ds/output_guard.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.cli_options import (
    add_decoding_args,
    add_reward_args,
    bounded,
    device_name,
    device_names,
    finite,
    fraction,
    generation_config,
    non_negative,
    positive,
    positive_int,
    reward_context,
    reward_weights,
)
from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo import DemoConfig, build_demo
from higgs_ds.data.importers import FORMAT_OPTIONS, ImportConfig, import_corpus
from higgs_ds.data.manifest import BadSampleError
from higgs_ds.data.merge import merge_parts
from higgs_ds.data.numbers import NumberStats, spell_numbers
from higgs_ds.data.parts import parse_part
from higgs_ds.data.text import ArabicTextConfig, normalize_arabic
from higgs_ds.errors import ArgumentParser, ConfigError, DataError, UserError, run_cli


def main(argv: list[str] | None = None) -> int:
    """One `error:` line and exit 2 for bad input or a bad sample; a traceback for anything else."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:  # before the demo synthesises anything
        raise ConfigError(f"--workers {args.workers} is out of range", where="--workers", fix="give a number >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _, run = COMMANDS[args.command]
        summary = run(args)
    except BadSampleError as exc:
        raise DataError(str(exc), fix="fix that line, or re-run with --skip-bad to write bad samples to "
                                      "rejects.jsonl instead") from None
    except UserError:
        raise
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # bad settings, codec or spec: one clear line
        raise DataError(str(exc)) from None
    if summary is not None:  # normalize-text writes its own output
        print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def _parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def _add_build_parser(sub) -> None:
    build = sub.add_parser("build", help="manifest -> shards")
    build.add_argument("--manifest", required=True)
    build.add_argument("--out", required=True)
    build.add_argument("--codec", choices=("auto", "dac", "higgs"), default="auto",
                       help="codec family (default: detected from --codec-path)")
    build.add_argument("--codec-path", "--codec-weights", dest="codec_path",
                       help="local codec: a Higgs Audio v2 tokenizer folder or a DAC weights file")
    build.add_argument("--codec-device", type=device_names, default="auto",
                       help="auto (every GPU when there are any, else cpu) | cpu | cuda (every visible GPU) | "
                            "cuda:0,cuda:2 (those GPUs): one codec worker per GPU")
    build.add_argument("--codec-batch-size", type=positive_int, default=8)
    build.add_argument("--num-codebooks", type=positive_int, help="DAC only: quantizers to keep (default: all)")
    build.add_argument("--audio-spec", type=Path, help="JSON audio spec of precomputed codes (see audio_spec.json)")
    build.add_argument("--shard-size-mb", type=float, default=64.0)
    build.add_argument("--max-samples-per-shard", type=int, default=10_000)
    build.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: one per GPU, or 1 on the CPU); more than the GPUs share them "
                            "round-robin")
    build.add_argument("--part", help="i/N: build only part i of N of the manifest (contiguous lines), for one node "
                                      "of a multi-node build; then `merge` the N part folders")
    build.add_argument("--skip-bad", action="store_true", help="reject bad samples to rejects.jsonl instead of failing")
    build.add_argument("--max-seconds", type=float, default=60.0,
                       help="longer audio is a bad sample (read from its header, never decoded): segment it first")
    build.add_argument("--allow-empty", action="store_true",
                       help="write an empty shard set when no row is usable (by default that is an error)")


def _add_demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="build the built-in Arabic demo dataset")
    demo.add_argument("--out", default="data/demo")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)


def _add_merge_parser(sub) -> None:
    merge = sub.add_parser("merge", help="the folders of `build --part i/N` (or `preferences --part i/N`) -> one split",
                           description="Checks that the folders are parts 0..N-1 of one manifest with one audio spec "
                                       "and no id twice, links their shards into --out and writes shards.json and "
                                       "rejects.jsonl there.")
    merge.add_argument("--out", required=True)
    merge.add_argument("parts", nargs="+", help="the part folders")


def _add_normalize_parser(sub) -> None:
    norm = sub.add_parser("normalize-text", help="stdin lines -> normalised lines on stdout (numbers read out)",
                          description="The transcript normalisation the renderer applies, for checking by eye: "
                          "`echo 'في 2024 ارتفع 5%' | python launch/prepare_data.py normalize-text`. "
                          "Counts of what was read and left alone go to stderr.")
    norm.add_argument("--numbers", choices=("words", "keep"), default="words")
    norm.add_argument("--strip-diacritics", action="store_true")


def _build(args) -> dict:
    codec = spec = None
    if args.codec_path:
        codec = CodecConfig(path=args.codec_path, kind=args.codec, num_codebooks=args.num_codebooks,
                            device=args.codec_device, batch_size=args.codec_batch_size)
    if args.audio_spec:
        spec = _read_spec(args.audio_spec)
    index = build_shards(BuildConfig(
        manifest=args.manifest, out_dir=args.out, codec=codec, spec=spec, shard_size_mb=args.shard_size_mb,
        max_samples_per_shard=args.max_samples_per_shard, num_workers=args.workers, skip_bad=args.skip_bad,
        max_seconds=args.max_seconds, part=parse_part(args.part) if args.part else None,
        allow_empty=args.allow_empty))
    return _summary(index)


def _summary(index: dict) -> dict:
    summary = {k: index[k] for k in ("num_samples", "num_frames", "rejects", "reject_kinds")}
    summary["shards"] = len(index["shards"])
    summary["audio_spec"] = AudioSpec.from_dict(index["audio_spec"]).describe()
    return summary


def _add_segment_parser(sub) -> None:
    seg = sub.add_parser("segment", help="long recordings -> utterances, transcripts and a manifest",
                         description="Cuts long recordings at pauses (silero-vad), transcribes the cuts with a local "
                         "Whisper folder and writes wavs/, manifest.jsonl, segments.jsonl and segment_summary.json "
                         "(every second of input kept or dropped with a reason). See docs/data.md.")
    seg.add_argument("--input", nargs="+", required=True, help="audio files, folders, or text files listing paths")
    seg.add_argument("--out", required=True)
    seg.add_argument("--asr", help="local Whisper folder (without it: segments and wavs only, no manifest)")
    for name, default, check in [("min-seconds", 1.0, positive), ("max-seconds", 20.0, positive),
                                 ("merge-gap", 0.3, non_negative), ("join-gap", 1.0, non_negative),
                                 ("pad", 0.1, bounded(float, 0, 1)),  # silence kept each side of a cut
                                 ("vad-threshold", 0.5, bounded(float, 0, 1, low_open=True, high_open=True)),
                                 ("min-asr-confidence", 0.4, fraction)]:
        seg.add_argument(f"--{name}", type=check, default=default)
    seg.add_argument("--speaker-pattern", help=r"regex with a (?P<speaker>...) group, searched in each path")
    seg.add_argument("--language", default="ar")
    seg.add_argument("--device", type=device_name, default="cpu")
    seg.add_argument("--asr-batch-size", type=positive_int, default=8)


def _segment(args) -> dict:
    from higgs_ds.prep.segment import SegmentConfig, segment_recordings

    options = {k: v for k, v in vars(args).items() if k not in ("command", "input")}
    summary = segment_recordings(SegmentConfig(inputs=tuple(args.input), **options))
    summary.pop("per_file")
    return summary


def _add_filter_parser(sub) -> None:
    filt = sub.add_parser("filter", help="quality metrics and thresholds on a manifest, with a report",
                          description="Writes metrics.jsonl, filter_report.md (+ a histogram per metric with its "
                          "threshold), and unless --dry-run, manifest.jsonl (kept rows) and rejects.jsonl (each "
                          "failed metric, value and threshold). See docs/data.md.")
    filt.add_argument("--manifest", required=True)
    filt.add_argument("--out", required=True)
    for name, default, check in [("min-seconds", 1.0, non_negative), ("max-seconds", 20.0, positive),
                                 ("max-clipping", 0.001, fraction), ("min-lufs", -45.0, finite),
                                 ("min-snr-db", 10.0, finite), ("min-dnsmos", 3.0, finite),
                                 ("max-rate-z", 3.0, positive), ("max-cer", 0.3, non_negative)]:
        filt.add_argument(f"--{name}", type=check, default=default)
    filt.add_argument("--asr", help="local Whisper folder: adds CER against the manifest text")
    filt.add_argument("--loudness-target", type=finite, help="LUFS: write kept audio normalised to this loudness")
    filt.add_argument("--no-dnsmos", dest="dnsmos", action="store_false")
    filt.add_argument("--dry-run", action="store_true", help="only the report and metrics")
    filt.add_argument("--device", type=device_name, default="cpu")


def _filter(args) -> dict:
    from higgs_ds.prep.filter import FilterConfig, filter_manifest

    summary = filter_manifest(FilterConfig(**_options(args)))
    summary.pop("config")
    return summary


def _normalize_lines(args) -> None:
    stats = NumberStats()
    cfg = ArabicTextConfig(keep_diacritics=not args.strip_diacritics, numbers="keep")
    for line in sys.stdin:
        text = spell_numbers(line, stats) if args.numbers == "words" else line
        print(normalize_arabic(text, cfg))
    print(json.dumps(stats.as_dict(), ensure_ascii=False), file=sys.stderr)


def _options(args) -> dict:
    """The subcommand's flags as keyword arguments of its config."""
    return {k: v for k, v in vars(args).items() if k != "command"}


def _import(args) -> dict:
    return import_corpus(ImportConfig(**_options(args)))


def _merge(args) -> dict:
    return _summary(merge_parts(args.out, args.parts))


def _demo(args) -> dict:
    return build_demo(DemoConfig(out_dir=args.out, num_workers=args.workers, seed=args.seed))


def _read_spec(path: Path) -> AudioSpec:
    if not path.is_file():
        raise ConfigError(f"audio spec {path} not found", where="--audio-spec",
                          fix="give the audio_spec.json written beside the codes (or by a shard build)")
    try:
        return AudioSpec.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"audio spec {path} is not a valid spec ({exc})", where="--audio-spec",
                          fix="compare it with audio_spec.json of a built shard folder") from None


def _add_preferences_parser(sub) -> None:
    pref = sub.add_parser("preferences", help="N candidates per prompt from a run, scored -> chosen/rejected pair "
                                              "shards for DPO",
                          description="Generates --candidates N samples per manifest row (one batch, seeded with "
                          "--seed + the row's line), scores them with --rewards, and writes the best as the chosen "
                          "and the worst as the rejected sample of a pair shard, with every score. Prompts whose "
                          "candidates tie are counted and skipped. --part i/N splits the manifest as `build` does; "
                          "`merge` joins the parts. See docs/rewards.md.")
    pref.add_argument("--from", dest="source", required=True, type=Path,
                      help="a run dir, checkpoint tag dir or exported dir")
    pref.add_argument("--tag", help="checkpoint tag of a run (default: latest)")
    pref.add_argument("--manifest", required=True, help="the prompts: a training manifest (target audio optional)")
    pref.add_argument("--out", required=True)
    pref.add_argument("--candidates", type=bounded(int, 2), default=8, help="samples per prompt (>= 2)")
    pref.add_argument("--rewards", type=reward_weights, required=True,
                      help="name[=weight],...: cer, sim, dnsmos, duration, stop or package.module:function")
    pref.add_argument("--min-margin", type=non_negative, default=0.0,
                      help="a prompt whose best and worst rewards differ by no more gives no pair")
    pref.add_argument("--part", help="i/N: only part i of N of the manifest (contiguous lines); then `merge`")
    pref.add_argument("--prompts-per-shard", type=positive_int, default=256)
    pref.add_argument("--skip-bad", action="store_true", help="reject bad rows to rejects.jsonl instead of failing")
    pref.add_argument("--tokenizer", help="tokenizer dir (default: the checkpoint's)")
    pref.add_argument("--codec-path", help="local copy of the codec the checkpoint's audio spec names")
    pref.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda[:i]")
    pref.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto")
    add_decoding_args(pref)
    add_reward_args(pref)


def _preferences(args) -> dict:
    from higgs_ds.rewards import read_chars_per_second
    from higgs_ds.rewards.pairs import PairsConfig, build_pairs

    generation = generation_config(args)
    if generation.greedy:
        raise ConfigError("greedy decoding makes N equal candidates", where="--greedy / --temperature",
                          fix="sample: leave out --greedy and give --temperature > 0")
    rate = args.chars_per_second if args.chars_per_second is not None else read_chars_per_second(args.source)
    if "duration" in args.rewards and rate is None:
        raise ConfigError(f"the duration reward needs a speaking rate and {args.source} saved none",
                          where="--chars-per-second", fix="give --chars-per-second, or leave duration out")
    return build_pairs(PairsConfig(
        source=str(args.source), manifest=args.manifest, out_dir=args.out, rewards=args.rewards,
        candidates=args.candidates, context=reward_context(args, rate), generation=generation, seed=args.seed,
        min_margin=args.min_margin, part=parse_part(args.part) if args.part else None, tag=args.tag,
        tokenizer=args.tokenizer, codec_path=args.codec_path, device=args.device, dtype=args.dtype,
        prompts_per_shard=args.prompts_per_shard, skip_bad=args.skip_bad))


def _add_import_parser(sub) -> None:
    imp = sub.add_parser("import", help="a corpus (hf, ljspeech, commonvoice, kaldi, lhotse) -> train/eval manifests",
                         description="Writes train.jsonl, eval.jsonl, rejects.jsonl (every row not imported, with "
                         "a reason) and import_summary.json under --out. See docs/data.md, 'Importing a corpus'.")
    imp.add_argument("--from", dest="fmt", required=True, choices=sorted(FORMAT_OPTIONS))
    imp.add_argument("--src", required=True, help="the corpus folder (lhotse: or a cuts manifest file)")
    imp.add_argument("--out", required=True, help="folder for the manifests (and decoded hf audio)")
    imp.add_argument("--split-by", choices=("utterance", "speaker"), default="utterance")
    imp.add_argument("--eval-fraction", type=float, default=0.0)
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--ref-pairing", choices=("none", "same-speaker"), default="none",
                     help="same-speaker: another utterance of the speaker (same split) as voice-cloning reference")
    imp.add_argument("--split", help="hf: dataset split; commonvoice: the .tsv to read (default validated); "
                                     "lhotse: the manifests named *_<split>.jsonl.gz")
    imp.add_argument("--audio-column", help="hf (default audio)")
    imp.add_argument("--text-column", help="hf (default text)")
    imp.add_argument("--speaker-column", help="hf")
    imp.add_argument("--id-column", help="hf (default <split>_<row index>)")
    imp.add_argument("--speaker", help="ljspeech: the speaker id (default the folder name)")
    imp.add_argument("--audio-root", help="kaldi: folder that relative wav.scp paths start from (default --src)")


# subcommand -> (adds its flags, runs it); every run goes through `_main`'s one error mapping and returns its
# summary, printed as JSON, or None when it wrote its own output
COMMANDS = {
    "build": (_add_build_parser, _build),
    "demo": (_add_demo_parser, _demo),
    "import": (_add_import_parser, _import),
    "segment": (_add_segment_parser, _segment),
    "filter": (_add_filter_parser, _filter),
    "merge": (_add_merge_parser, _merge),
    "preferences": (_add_preferences_parser, _preferences),
    "normalize-text": (_add_normalize_parser, _normalize_lines),
}

if __name__ == "__main__":
    sys.exit(main())
