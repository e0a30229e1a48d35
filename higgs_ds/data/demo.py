"""The built-in demo dataset: project-written Arabic sentences -> espeak-ng speech -> seeded small
DAC codes -> shards, built by the same builder as real data, plus a demo tokenizer.

Provenance: ``demo/sentences_ar.txt`` was written for this project (MSA, some fully diacritised; the
first two lines are the two sentences of the analysis this project grew from). Speech is Debian's ``espeak-ng`` Arabic voice with six
pitch/speed/variant settings acting as speakers. The codec is the small DAC shipped in ``demo/codec/``
(:func:`shipped_demo_codec`), trained by ``scripts/train_demo_codec.py`` on espeak-ng speech of the
non-eval sentences: it decodes espeak-ng Arabic intelligibly, and is a codec for that speech only.

Every step is idempotent, so re-running finishes an interrupted build without redoing work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from higgs_ds.codec import CodecConfig
from higgs_ds.data.builder import BuildConfig, build_shards
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from higgs_ds.data.text import normalize_arabic
from higgs_ds.output_guard import OutputKind

log = logging.getLogger(__name__)
DEMO_OUTPUT = OutputKind("prepare_data demo", files=("wavs/utt0000.wav",))  # re-running finishes or no-ops


@dataclass(frozen=True)
class DemoSpeaker:
    name: str
    voice: str  # espeak-ng voice+variant
    pitch: int  # 0..99
    speed: int  # words per minute


DEMO_SPEAKERS = (
    DemoSpeaker("spk0_low_slow", "ar", 30, 150),
    DemoSpeaker("spk1_mid", "ar", 50, 170),
    DemoSpeaker("spk2_high_fast", "ar", 70, 190),
    DemoSpeaker("spk3_f3", "ar+f3", 55, 165),
    DemoSpeaker("spk4_m3", "ar+m3", 40, 175),
    DemoSpeaker("spk5_f2", "ar+f2", 65, 180),
)


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str = "data/demo"
    num_eval: int = 18  # utterances held out for the eval split
    clone_fraction: float = 0.5  # share of samples that get a same-speaker voice-cloning reference
    samples_per_shard: int = 24  # small shards so 2 ranks x 2 workers all get some
    vocab_size: int = 3000
    seed: int = 0
    num_workers: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.clone_fraction <= 1 or self.num_eval < 1 or self.samples_per_shard < 1:
            raise ValueError(f"invalid demo config {self}")


def demo_eval_sentences(num_sentences: int, cfg: DemoConfig, rng: random.Random | None = None) -> set[int]:
    """Indices of the held-out sentences: the first draw of ``random.Random(cfg.seed)`` (`rng`, advanced,
    when given). The demo codec's training script excludes the same ones."""
    rng = rng or random.Random(cfg.seed)
    return set(rng.sample(range(num_sentences), cfg.num_eval))


def build_seeded_demo_dac(path: str | Path, seed: int = 0) -> Path:
    """Write a small DAC with seeded random weights (1.8M parameters, 16 kHz, hop 640 = 25 frames/s, 8 x 1024
    codebooks). Its codes are deterministic but carry no learned acoustics. Idempotent."""
    import dac

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = dac.DAC(encoder_dim=16, encoder_rates=[2, 4, 8, 10], decoder_dim=64, decoder_rates=[10, 8, 4, 2],
                    n_codebooks=8, codebook_size=1024, sample_rate=16000)
    tmp = path.with_suffix(".tmp")
    model.save(str(tmp), package=False)
    tmp.rename(path)
    return path


SHIPPED_CODEC = "demo/codec/dac_demo.pth"  # written by scripts/train_demo_codec.py; checksum in <file>.sha256


def shipped_demo_codec(path: str | Path | None = None) -> Path:
    """The shipped demo codec's weights (default: the package's), checked against their ``.sha256`` file."""
    path = Path(path) if path is not None else Path(str(resources.files("higgs_ds.data").joinpath(SHIPPED_CODEC)))
    expected = path.with_name(path.name + ".sha256").read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path}: checksum {actual} does not match {expected} in {path.name}.sha256 (a damaged or "
                         f"partial copy: restore it, or retrain with `make demo-codec`)")
    return path


def demo_sentences() -> list[str]:
    text = resources.files("higgs_ds.data").joinpath("demo/sentences_ar.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def synthesize(text: str, speaker: DemoSpeaker, path: Path) -> None:
    """espeak-ng -> wav (22.05 kHz mono), written atomically; an existing file is kept."""
    if path.is_file():
        return
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: install it (apt-get install espeak-ng) to build the demo")
    tmp = path.with_name(path.stem + ".tmp.wav")
    cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.speed), "-w", str(tmp), text]
    subprocess.run(cmd, check=True, capture_output=True)
    tmp.replace(path)


def _manifest_rows(utts: list[dict], clone_fraction: float, rng: random.Random) -> list[dict]:
    """Rows ordered by speaker; a cloning sample takes its reference from the previous utterance of
    the same speaker (so both usually land in the same shard and are encoded once)."""
    rows, by_speaker = [], {}
    for utt in utts:
        by_speaker.setdefault(utt["speaker"], []).append(utt)
    for speaker in sorted(by_speaker):
        group = by_speaker[speaker]
        for i, utt in enumerate(group):
            row = dict(utt)
            if len(group) > 1 and rng.random() < clone_fraction:
                ref = group[i - 1]  # i=0 wraps to the speaker's last utterance
                row.update(ref_audio=ref["audio"], ref_text=ref["text"])
            rows.append(row)
    return rows


def build_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    """Synthesise, encode and shard the demo; returns a summary (also written to ``demo.json``)."""
    start = time.time()
    out = DEMO_OUTPUT.create(DEMO_OUTPUT.check(cfg.out_dir))
    wav_dir = out / "wavs"
    wav_dir.mkdir(exist_ok=True)
    sentences = [normalize_arabic(s) for s in demo_sentences()]
    utts = []
    for i, text in enumerate(sentences):
        speaker = DEMO_SPEAKERS[i % len(DEMO_SPEAKERS)]
        path = wav_dir / f"utt{i:04d}.wav"
        synthesize(text, speaker, path)
        utts.append({"id": f"utt{i:04d}", "text": text, "audio": f"wavs/{path.name}", "speaker": speaker.name})
    log.info("synthesised %d utterances with espeak-ng in %.1fs", len(utts), time.time() - start)

    rng = random.Random(cfg.seed)
    eval_ids = {f"utt{i:04d}" for i in demo_eval_sentences(len(utts), cfg, rng)}
    codec_weights = shipped_demo_codec()
    log.info("demo codec: %s (a small DAC trained on espeak-ng Arabic speech only)", codec_weights)
    codec = CodecConfig(path=str(codec_weights), kind="dac")
    index = {}
    for split in ("train", "eval"):
        rows = _manifest_rows([u for u in utts if (u["id"] in eval_ids) == (split == "eval")], cfg.clone_fraction, rng)
        manifest = out / f"{split}.jsonl"
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not manifest.is_file() or manifest.read_text(encoding="utf-8") != body:
            manifest.write_text(body, encoding="utf-8")
        index[split] = build_shards(BuildConfig(
            manifest=str(manifest), out_dir=str(out / split), codec=codec, max_samples_per_shard=cfg.samples_per_shard,
            num_workers=cfg.num_workers, progress=cfg.progress))
    train_texts = [u["text"] for u in utts if u["id"] not in eval_ids]
    tokenizer = train_demo_tokenizer(train_texts, out / "tokenizer", cfg.vocab_size)
    summary = {
        "train": str(out / "train"), "eval": str(out / "eval"), "tokenizer": str(out / "tokenizer"),
        "codec_weights": str(codec_weights),
        "codec_note": "small DAC trained on espeak-ng Arabic speech only (pass --codec-path for a real codec)",
        "speakers": [s.__dict__ for s in DEMO_SPEAKERS], "vocab_size": len(tokenizer),
        "train_samples": index["train"]["num_samples"], "eval_samples": index["eval"]["num_samples"],
        "train_shards": len(index["train"]["shards"]), "train_frames": index["train"]["num_frames"],
        "seconds": round(time.time() - start, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return summary
