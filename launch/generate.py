"""Generate Arabic speech from a checkpoint: writes a wav and its codec codes (.npy) per text.

    python launch/generate.py runs/demo --text "مرحبا بكم" --out runs/demo/generated/hello.wav

The checkpoint is a training run directory (latest checkpoint, or --tag), one checkpoint tag
directory, or an exported / released directory (Boson or transformers layout). Voice cloning:
--ref-audio ref.wav --ref-text "its transcript" (or --ref-codes codes.npy). Several --text flags
make one batch; outputs are then numbered (hello_0.wav, hello_1.wav, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from higgs_ds.data.codec import CodecConfig, file_sha256, load_audio, load_codec
from higgs_ds.data.render import ChatMLRenderer
from higgs_ds.data.schema import PromptConfig
from higgs_ds.inference import GenerationConfig, TTSRequest, decode_codes, generate, load_model, write_codes, write_wav

log = logging.getLogger("higgs_ds.generate")
DEMO_CODEC = "data/demo/codec/dac_seeded_demo.pth"


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="run dir, checkpoints/ dir, checkpoint tag dir or exported dir")
    p.add_argument("--tag", help="checkpoint tag of a run (default: latest)")
    p.add_argument("--text", action="append", default=[], help="text to speak (repeat for a batch)")
    p.add_argument("--text-file", type=Path, help="one text per line (added to --text)")
    p.add_argument("--scene", help="scene description for the system prompt")
    p.add_argument("--ref-audio", type=Path, help="reference audio for voice cloning (needs --ref-text)")
    p.add_argument("--ref-codes", type=Path, help="reference codec codes [K, T] .npy instead of --ref-audio")
    p.add_argument("--ref-text", help="transcript of the reference audio")
    p.add_argument("--tokenizer", type=Path, help="tokenizer dir (default: the checkpoint's)")
    p.add_argument("--codec-kind", default="dac")
    p.add_argument("--codec-weights", default=DEMO_CODEC, help=f"codec weights (default: the demo codec {DEMO_CODEC})")
    p.add_argument("--out", type=Path, default=Path("generated/speech.wav"), help="output wav path")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    g = p.add_argument_group("decoding (defaults: Higgs Audio v2 inference defaults)")
    d = GenerationConfig()
    g.add_argument("--max-new-frames", type=int, default=d.max_new_frames, help="25 frames = 1 s")
    g.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=d.top_k)
    g.add_argument("--top-p", type=float, default=d.top_p)
    g.add_argument("--ras-window", type=int, default=d.ras_window, help="0 = no repetition-aware sampling")
    g.add_argument("--ras-max-repeats", type=int, default=d.ras_max_repeats)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--greedy", action="store_true", help="temperature 0 and no RAS: deterministic")
    return p.parse_args(argv)


def _warn_on_codec_mismatch(codec_sha: str, checkpoint: Path) -> None:
    """Warn when the codec differs from the one a run's training shards were encoded with."""
    configs = [checkpoint / "config.json", *sorted(checkpoint.glob("checkpoints/step*/config.json"))]
    for cfg in (c for c in configs if c.is_file()):
        meta = json.loads(cfg.read_text())
        shards = meta.get("train", meta).get("data", {}).get("train", {}).get("shards")
        index = Path(shards or "") / "shards.json"
        if shards and index.is_file():
            expected = json.loads(index.read_text()).get("codec", {}).get("weights_sha256")
            if expected and expected != codec_sha:
                log.warning("codec weights differ from those the training shards were encoded with (%s): the "
                            "audio will not match what the model learned", index)
            return


def main(argv=None) -> list[Path]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = _parse(argv)
    texts = list(a.text) + ([t.strip() for t in a.text_file.read_text(encoding="utf-8").splitlines() if t.strip()]
                            if a.text_file else [])
    if not texts:
        sys.exit("give at least one --text (or --text-file)")
    if (a.ref_audio or a.ref_codes) and not a.ref_text:
        sys.exit("--ref-audio/--ref-codes need --ref-text (the reference transcript)")
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    dtype = torch.bfloat16 if a.dtype == "bf16" or (a.dtype == "auto" and device.type == "cuda") else torch.float32

    loaded = load_model(a.checkpoint, a.tag, device=device, dtype=dtype)
    tokenizer_dir = a.tokenizer or loaded.tokenizer_dir
    if tokenizer_dir is None:
        sys.exit(f"no tokenizer found for {a.checkpoint}: pass --tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    mcfg = loaded.model.config
    codec = load_codec(CodecConfig(kind=a.codec_kind, weights=a.codec_weights, num_codebooks=mcfg.audio_num_codebooks,
                                   device=str(device)))
    _warn_on_codec_mismatch(file_sha256(a.codec_weights), a.checkpoint)

    ref_codes = None
    if a.ref_codes:
        ref_codes = np.load(a.ref_codes)
    elif a.ref_audio:
        wav, sr = load_audio(a.ref_audio)
        ref_codes = codec.encode([wav], sr)[0].numpy()
    requests = [TTSRequest(t, scene=a.scene, ref_text=a.ref_text if ref_codes is not None else None,
                           ref_codes=ref_codes, id=f"text{i}") for i, t in enumerate(texts)]
    gen = GenerationConfig(max_new_frames=a.max_new_frames, temperature=0.0 if a.greedy else a.temperature,
                           top_k=a.top_k, top_p=a.top_p, ras_window=0 if a.greedy else a.ras_window,
                           ras_max_repeats=a.ras_max_repeats, seed=a.seed)
    renderer = ChatMLRenderer(tokenizer, mcfg.audio_num_codebooks)
    result = generate(loaded.model, renderer, requests, gen, PromptConfig())

    outputs = []
    for i, (codes, finished) in enumerate(zip(result.codes, result.finished, strict=True)):
        wav_path = a.out if len(texts) == 1 else a.out.with_name(f"{a.out.stem}_{i}{a.out.suffix or '.wav'}")
        wav = decode_codes(codec, codes)
        write_wav(wav_path, wav, codec.sample_rate)
        write_codes(wav_path.with_suffix(".npy"), codes)
        log.info("%s: %d frames (%.2f s)%s -> %s (+ %s)", texts[i], codes.shape[1], wav.numel() / codec.sample_rate,
                 "" if finished else f", no EOS within {gen.max_new_frames} frames", wav_path,
                 wav_path.with_suffix(".npy").name)
        outputs.append(wav_path)
    return outputs


if __name__ == "__main__":
    main()
