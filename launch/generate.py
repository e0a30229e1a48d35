"""Generate Arabic speech from a checkpoint: writes a wav and its codec codes (.npy) per text.

    python launch/generate.py runs/demo --text "مرحبا بكم" --out runs/demo/generated/hello.wav

The checkpoint is a training run directory (latest checkpoint, or --tag), one checkpoint tag
directory, or an exported / released directory of any model family and layout. The codes are decoded by
the codec the checkpoint's audio spec names (`--codec-path` gives a local copy when it moved), and the
prompt uses the layout the model was trained with (system prompt, scene block). Voice cloning:
--ref-audio ref.wav --ref-text "its transcript" (or --ref-codes codes.npy). Several --text flags
make one batch; outputs are then numbered (hello_0.wav, hello_1.wav, ...).

Best-of-N: --candidates N --select cer,sim samples N candidates per text (candidate i with seed --seed + i,
exactly what a plain run with that seed writes), scores them with the rewards (weights: cer=2,sim=1), keeps
the best by their weighted sum, and writes every candidate's scores beside the wav (<out>.candidates.json).
See docs/rewards.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import soundfile

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.cli_options import (
    add_decoding_args,
    add_reward_args,
    add_scorer_args,
    device_name,
    generation_config,
    positive_int,
    reward_context,
    reward_weights,
    scorer_config,
)
from higgs_ds.codec import load_audio
from higgs_ds.data.shards import validate_codes
from higgs_ds.data.text import unspeakable
from higgs_ds.device import resolve_device, resolve_precision, torch_dtype
from higgs_ds.errors import ArgumentParser, CheckpointError, ConfigError, DataError, quote, run_cli
from higgs_ds.inference import GenerationConfig, TTSRequest, decode_codes, write_codes, write_wav
from higgs_ds.inference.loading import audio_spec_of
from higgs_ds.quality.scorer import build_scorer, format_table, summarize, write_scores
from higgs_ds.rewards import build_rewards, check_rewards, read_chars_per_second
from higgs_ds.rewards.candidates import load_sampler, rank, scores_of

log = logging.getLogger(__name__)


def _parse(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="run dir, checkpoints/ dir, checkpoint tag dir or exported dir")
    p.add_argument("--tag", help="checkpoint tag of a run (default: latest)")
    p.add_argument("--text", action="append", default=[], help="text to speak (repeat for a batch)")
    p.add_argument("--text-file", type=Path, help="one text per line (added to --text)")
    p.add_argument("--scene", help="scene description for the system prompt")
    p.add_argument("--ref-audio", type=Path, help="reference audio for voice cloning (needs --ref-text)")
    p.add_argument("--ref-codes", type=Path, help="reference codec codes [K, T] .npy instead of --ref-audio")
    p.add_argument("--ref-text", help="transcript of the reference audio")
    p.add_argument("--tokenizer", type=Path, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--codec-path", help="local copy of the codec the checkpoint's audio spec names (default: the "
                                        "path recorded in the spec; its weights must match)")
    p.add_argument("--out", type=Path, default=Path("generated/speech.wav"), help="output wav path")
    p.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    add_decoding_args(p)
    p.add_argument("--score", action="store_true", help="score the outputs (table + <out>.scores.json): DNSMOS, "
                                                         "speaker similarity to --ref-audio, WER/CER with --whisper")
    add_scorer_args(p)
    b = p.add_argument_group("best-of-N (docs/rewards.md)")
    b.add_argument("--candidates", type=positive_int, default=1,
                   help="sample N candidates per text (seeds --seed .. --seed+N-1) and keep the best by --select")
    b.add_argument("--select", type=reward_weights,
                   help="rewards that pick the best candidate, name[=weight],...: cer, sim, dnsmos, duration, stop "
                        "or package.module:function")
    add_reward_args(p, with_model_folders=False)
    a = p.parse_args(argv)
    if a.candidates > 1 and a.select is None:
        p.error("--candidates needs --select (the rewards that pick the best candidate)")
    if a.select is not None and a.candidates < 2:
        p.error("--select needs --candidates N with N >= 2")
    if a.candidates > 1 and (a.greedy or a.temperature == 0):
        p.error("--candidates needs sampling: greedy decoding (--greedy, --temperature 0) makes N equal candidates")
    return a


def score_outputs(paths: list[Path], texts: list[str], a: argparse.Namespace) -> dict:
    """Offline metrics of the written wavs; the voice reference is --ref-audio (no MCD: its text differs)."""
    scorer = build_scorer(dataclasses.replace(scorer_config(a), mcd=False))
    ref, ref_sr = load_audio(a.ref_audio) if a.ref_audio else (None, None)
    rows = {}
    for path, text in zip(paths, texts, strict=True):
        wav, sr = load_audio(path)
        rows[path.name] = scorer.score_one(wav.numpy(), sr, text, None if ref is None else ref.numpy(), ref_sr)
    result = {"summary": summarize(list(rows.values())), "per_utterance": rows}
    print(format_table(result["summary"]))
    write_scores(a.out.with_suffix(".scores.json"), result)
    return result


def _texts(a: argparse.Namespace) -> list[str]:
    """The texts to speak, each checked after normalisation (tatweel or zero-width characters alone are empty)."""
    lines = []
    if a.text_file:
        if not a.text_file.is_file():
            raise ConfigError(f"text file {a.text_file} not found", where="--text-file", fix="check the path")
        try:
            lines = [t.strip() for t in a.text_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        except UnicodeDecodeError as exc:
            raise ConfigError(f"text file {a.text_file} is not UTF-8 ({exc.reason} at byte {exc.start})",
                              where="--text-file", fix="save it as UTF-8") from None
    texts = list(a.text) + lines
    if not texts:
        raise ConfigError("nothing to say", where="--text", fix="give at least one --text (or --text-file)")
    for i, text in enumerate(texts):
        why = unspeakable(text)  # the text gate of every entry point (data/text.py)
        if why:
            raise ConfigError(f"text {i + 1} ({quote(text)}) {why}", where="--text", fix="give words to speak")
    return texts


def _reward_context(a: argparse.Namespace) -> dict:
    """The rewards' context; the duration rate is --chars-per-second, else the one the run saved."""
    rate = a.chars_per_second if a.chars_per_second is not None else read_chars_per_second(a.checkpoint)
    if "duration" in a.select and rate is None:
        raise ConfigError(f"the duration reward needs a speaking rate and {a.checkpoint} saved none",
                          where="--chars-per-second", fix="give --chars-per-second (characters per second of "
                                                          "the training speech), or select without duration")
    return reward_context(a, rate)


def check_inputs(a: argparse.Namespace) -> tuple[list[str], GenerationConfig]:
    """Everything the flags and the file system can tell, before any model or codec is loaded."""
    texts = _texts(a)
    gen = generation_config(a)
    if (a.ref_audio or a.ref_codes) and not a.ref_text:
        raise ConfigError("--ref-audio/--ref-codes need --ref-text", where="--ref-text",
                          fix="give the transcript of the reference")
    why = a.ref_text and unspeakable(a.ref_text)
    if why:
        raise ConfigError(f"--ref-text {quote(a.ref_text)} {why}", where="--ref-text",
                          fix="give the transcript of the reference")
    for flag, path in (("--ref-audio", a.ref_audio), ("--ref-codes", a.ref_codes)):
        if path is not None and not path.is_file():
            raise DataError(f"{path} not found", where=flag, fix="check the path")
    if a.ref_audio:
        try:
            soundfile.info(str(a.ref_audio))
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError
            raise DataError(f"{a.ref_audio} is not a readable sound file ({type(exc).__name__})",
                            where="--ref-audio", fix="give a wav or flac recording") from None
    if not a.checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {a.checkpoint} is not a folder", where="checkpoint",
                              fix="give a run dir, its checkpoints/ dir, a tag dir or an exported dir")
    if a.tokenizer is not None and not ((a.tokenizer / "tokenizer.json").is_file()
                                        or (a.tokenizer / "tokenizer_config.json").is_file()):
        raise ConfigError(f"{a.tokenizer} is not a local tokenizer folder", where="--tokenizer",
                          fix="give the folder holding tokenizer.json")
    if a.out.is_dir():
        raise ConfigError(f"{a.out} is a folder", where="--out", fix="give a .wav file path")
    spec = audio_spec_of(a.checkpoint, a.tag)  # config files only: a --tag on an export is refused here
    if a.ref_codes:
        _ref_codes(a.ref_codes, spec)
    if a.select is not None:
        check_rewards(a.select, _reward_context(a))  # files only: model folders, packages, plug-in modules
    return texts, gen


def _ref_codes(path: Path, spec: AudioSpec | None = None) -> np.ndarray:
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for broken files
        raise DataError(f"{path} is not a .npy array ({type(exc).__name__})", where="--ref-codes",
                        fix="give codes saved with numpy.save, shape [codebooks, frames]") from None
    if codes.ndim != 2 or codes.shape[1] == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise DataError(f"{path} holds {codes.dtype} {codes.shape}, not integer codes [codebooks, frames > 0]",
                        where="--ref-codes", fix="give the .npy a generation or a shard build wrote")
    if spec is not None:
        try:
            validate_codes(codes, spec.num_codebooks, spec.codebook_size, str(path))
        except ValueError as exc:
            raise DataError(f"{exc}, which the checkpoint's codec ({spec.describe()}) does not have",
                            where="--ref-codes", fix="give codes made by the codec this checkpoint was trained "
                                                     "with (or --ref-audio)") from None
    return codes


def _wav_path(out: Path, i: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}_{i}{out.suffix or '.wav'}")


def _select(a: argparse.Namespace, sampler, results: list, texts: list[str], ref_codes, ref_wav) -> list[int]:
    """Score every candidate of every text, write <wav>.candidates.json per text, return each text's best."""
    rewards = build_rewards(a.select, _reward_context(a))
    n, chosen = len(results), []
    for i, text in enumerate(texts):
        codes, finished = [r.codes[i] for r in results], [r.finished[i] for r in results]
        samples = sampler.reward_samples(codes, finished, [text] * n, rewards.needs_audio,
                                         reference_codes=None if ref_wav or ref_codes is None else [ref_codes] * n,
                                         reference_audio=[ref_wav[0]] * n if ref_wav else None,
                                         reference_rate=ref_wav[1] if ref_wav else None)
        scored = rewards.score(samples)
        best, _ = rank(scored.total)
        chosen.append(best)
        record = {"text": text, "select": a.select, "chosen": best, "left_out": scored.left_out,
                  "candidates": [{"seed": a.seed + c, "frames": int(codes[c].shape[1]),
                                  "finished": bool(finished[c]), "total": float(scored.total[c]),
                                  "scores": scores_of(scored, c)} for c in range(n)]}
        path = _wav_path(a.out, i, len(texts)).with_suffix(".candidates.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        log.info("%s: candidate %d of %d (seed %d) chosen, reward %.4f (the others: %s) -> %s", text, best, n,
                 a.seed + best, scored.total[best],
                 ", ".join(f"{t:.4f}" for c, t in enumerate(scored.total) if c != best), path.name)
    return chosen


def main(argv=None) -> list[Path]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = _parse(argv)
    texts, gen = check_inputs(a)
    device = resolve_device(a.device)
    dtype = torch_dtype(resolve_precision(a.dtype, device))

    sampler = load_sampler(a.checkpoint, a.tag, device, dtype, a.tokenizer, a.codec_path)
    codec = sampler.codec

    ref_codes = ref_wav = None
    if a.ref_codes:
        ref_codes = _ref_codes(a.ref_codes, sampler.spec)
    elif a.ref_audio:
        wav, sr = load_audio(a.ref_audio)
        ref_codes, ref_wav = codec.encode([wav], sr)[0].numpy(), (wav.numpy(), sr)
    requests = [TTSRequest(text, scene=a.scene, ref_text=a.ref_text if ref_codes is not None else None,
                           ref_codes=ref_codes, id=f"text{i}") for i, text in enumerate(texts)]
    # candidate i of every text: one batch with seed --seed + i (the training prompt layout)
    results = [sampler.sample(requests, dataclasses.replace(gen, seed=gen.seed + i)) for i in range(a.candidates)]
    chosen = [0] * len(texts)
    if a.select is not None:
        chosen = _select(a, sampler, results, texts, ref_codes, ref_wav)

    outputs = []
    for i, (text, pick) in enumerate(zip(texts, chosen, strict=True)):
        codes, finished = results[pick].codes[i], results[pick].finished[i]
        wav_path = _wav_path(a.out, i, len(texts))
        wav = decode_codes(codec, codes)
        write_wav(wav_path, wav, codec.sample_rate)
        write_codes(wav_path.with_suffix(".npy"), codes)
        log.info("%s: %d frames (%.2f s)%s -> %s (+ %s)", text, codes.shape[1], wav.numel() / codec.sample_rate,
                 "" if finished else f", no EOS within {gen.max_new_frames} frames", wav_path,
                 wav_path.with_suffix(".npy").name)
        outputs.append(wav_path)
    if a.score:
        score_outputs(outputs, texts, a)
    return outputs


if __name__ == "__main__":
    sys.exit(run_cli(main))
