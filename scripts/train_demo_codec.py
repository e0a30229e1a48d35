"""Train the demo's small DAC codec on espeak-ng Arabic speech (CPU, reproducible).

The codec is descript-audio-codec's own ``dac.DAC`` (16 kHz, encoder rates 2,4,8,10 -> hop 640 =
25 frames/s like Higgs Audio v2, 8 codebooks x 1024) trained with ``dac.nn.loss.MelSpectrogramLoss``
+ waveform L1 + the quantizer's commitment and codebook losses. There is no discriminator: on a CPU
it costs ~20x the generator, so the codec reconstructs espeak-ng speech intelligibly but not
transparently. It is a codec for espeak-ng speech only.

Training speech: the demo sentences that are NOT in the demo's eval split (the same seeded
selection as `higgs_ds.data.demo.build_demo`), spoken by the six demo voices plus extra espeak-ng
Arabic voices, pitches and speeds. The demo's eval sentences never reach the codec.

    python scripts/train_demo_codec.py                              # -> higgs_ds/data/demo/codec/
    python scripts/train_demo_codec.py --steps 50 --out /tmp/bench  # speed check

Outputs in ``--out``: ``dac_demo.pth`` (fp16 weights, ``dac.DAC.load``-able), ``dac_demo.pth.sha256``
and ``dac_demo.json`` (these settings, the data, the step reached and the last losses). The fp16
weights are rewritten every ``--save-every`` steps, so a stopped run leaves a usable codec;
``--resume`` continues from the full-precision state in ``--work-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from higgs_ds.codec import load_audio  # noqa: E402
from higgs_ds.data.demo import (  # noqa: E402
    DEMO_SPEAKERS,
    DemoConfig,
    DemoSpeaker,
    demo_eval_sentences,
    demo_sentences,
    synthesize,
)
from higgs_ds.data.text import normalize_arabic  # noqa: E402

log = logging.getLogger("train_demo_codec")

# Voices beyond the six demo speakers, so the codec does not learn only the demo's exact settings.
EXTRA_SPEAKERS = tuple(DemoSpeaker(f"x_{variant}_p{pitch}_s{speed}", f"ar+{variant}", pitch, speed)
                       for variant, pitch, speed in (("m1", 45, 160), ("f1", 60, 175), ("m2", 20, 140),
                                                     ("f4", 75, 205), ("m7", 50, 185), ("f5", 40, 135)))


@dataclass
class CodecTrainConfig:
    out: str = str(REPO / "higgs_ds/data/demo/codec")
    name: str = "dac_demo"
    work_dir: str = "/tmp/higgs_ds_demo_codec"  # wavs + resumable fp32 state (not shipped)
    steps: int = 700  # the shipped codec: 700 steps (its JSON records a resume at 400 from a 900-step schedule)
    batch_size: int = 8
    clip_seconds: float = 1.0  # 25 frames per clip
    lr: float = 1e-3
    final_lr: float = 1e-4  # cosine decay after warmup
    warmup_steps: int = 50
    grad_clip: float = 10.0
    seed: int = 0
    threads: int = 1
    save_every: int = 100
    log_every: int = 10
    # Loss weights as in DAC's base recipe (mel 15, commitment 0.25, codebook 1) plus waveform L1.
    mel_weight: float = 15.0
    l1_weight: float = 1.0
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    mel_windows: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [10, 20, 40, 80, 128, 160])
    model: dict = field(default_factory=lambda: dict(
        encoder_dim=16, encoder_rates=[2, 4, 8, 10], decoder_dim=128, decoder_rates=[10, 8, 4, 2],
        n_codebooks=8, codebook_size=1024, codebook_dim=8, sample_rate=16000))

    def __post_init__(self) -> None:
        hop = math.prod(self.model["encoder_rates"])
        if math.prod(self.model["decoder_rates"]) != hop or any(r % 2 for r in self.model["decoder_rates"]):
            raise ValueError(f"decoder rates {self.model['decoder_rates']} must be even (an odd stride shortens the "
                             f"output) and multiply to the hop {hop}")
        if round(self.clip_seconds * self.model["sample_rate"]) % hop:
            raise ValueError(f"clip_seconds={self.clip_seconds} must be a whole number of {hop}-sample frames")
        if min(self.steps, self.batch_size, self.save_every, self.log_every) < 1 or len(self.mel_windows) != len(
                self.mel_bins):
            raise ValueError(f"invalid codec training config {self}")


def training_utterances(demo: DemoConfig | None = None) -> list[tuple[str, DemoSpeaker]]:
    """(text, speaker) pairs: every non-eval demo sentence with every demo and extra voice."""
    sentences = [normalize_arabic(s) for s in demo_sentences()]
    eval_ids = demo_eval_sentences(len(sentences), demo or DemoConfig())
    train = [s for i, s in enumerate(sentences) if i not in eval_ids]
    return [(text, spk) for text in train for spk in DEMO_SPEAKERS + EXTRA_SPEAKERS]


def load_corpus(cfg: CodecTrainConfig) -> list[torch.Tensor]:
    """Synthesise (cached in work_dir) and load the training speech at the codec rate, silence trimmed."""
    sr = cfg.model["sample_rate"]
    wav_dir = Path(cfg.work_dir) / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    clips, min_len = [], round(cfg.clip_seconds * sr)
    for text, spk in training_utterances():
        key = hashlib.sha1(f"{spk.voice}|{spk.pitch}|{spk.speed}|{text}".encode()).hexdigest()[:16]
        path = wav_dir / f"{key}.wav"
        synthesize(text, spk, path)
        wave, file_sr = load_audio(path)
        wave = torchaudio.functional.resample(wave, file_sr, sr)
        voiced = torch.nonzero(wave.abs() > 1e-3).flatten()
        if len(voiced):
            wave = wave[voiced[0]: voiced[-1] + 1]
        if len(wave) >= min_len:
            clips.append(wave.to(torch.float16))
    if not clips:
        raise RuntimeError(f"no training clip of at least {cfg.clip_seconds}s was synthesised in {wav_dir}")
    return clips


def sample_batch(clips: list[torch.Tensor], cfg: CodecTrainConfig, rng: random.Random) -> torch.Tensor:
    n = round(cfg.clip_seconds * cfg.model["sample_rate"])
    batch = []
    for _ in range(cfg.batch_size):
        clip = clips[rng.randrange(len(clips))]
        start = rng.randrange(len(clip) - n + 1)
        batch.append(clip[start: start + n].float())
    return torch.stack(batch)[:, None]


def learning_rate(cfg: CodecTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_shipped(model, cfg: CodecTrainConfig, record: dict) -> Path:
    """fp16 weights in dac's own file layout (``dac.DAC.load`` reads them back into fp32), checksum, settings."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg.name}.pth"
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "metadata": {"kwargs": dict(cfg.model)}}, tmp)
    tmp.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    settings = {"config": dataclasses.asdict(cfg), **record, "sha256": digest,
                "torch": torch.__version__, "note": "small DAC trained on espeak-ng Arabic speech only"}
    del settings["config"]["out"], settings["config"]["work_dir"]  # machine-specific
    (out / f"{cfg.name}.json").write_text(json.dumps(settings, indent=1) + "\n")
    return path


def train(cfg: CodecTrainConfig, resume: bool = False) -> dict:
    import dac
    from audiotools import AudioSignal
    from dac.nn.loss import L1Loss, MelSpectrogramLoss

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    start = time.time()
    clips = load_corpus(cfg)
    hours = sum(len(c) for c in clips) / cfg.model["sample_rate"] / 3600
    log.info("corpus: %d clips, %.2f h, in %.0fs", len(clips), hours, time.time() - start)

    model = dac.DAC(**cfg.model)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99))
    mel_loss = MelSpectrogramLoss(n_mels=cfg.mel_bins, window_lengths=cfg.mel_windows, pow=1.0, mag_weight=0.0,
                                  mel_fmin=[0.0] * len(cfg.mel_bins), mel_fmax=[None] * len(cfg.mel_bins))
    l1_loss = L1Loss()
    state_path = Path(cfg.work_dir) / "state.pt"
    step, history, resumes = 0, [], []
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step, history = state["step"], state.get("history", [])
        # A resume may change --steps (the cosine then follows the new length from here on): recorded.
        resumes = state.get("resumes", []) + [{"at_step": step, "steps": cfg.steps}]
        log.info("resumed from %s at step %d", state_path, step)
    sr = cfg.model["sample_rate"]
    window, t0 = [], time.time()
    record = {"params": params, "corpus_clips": len(clips), "corpus_hours": round(hours, 3), "resumes": resumes}
    model.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        x = sample_batch(clips, cfg, rng)
        out = model(x, sr)
        y, ref = AudioSignal(out["audio"], sr), AudioSignal(x, sr)
        losses = {"mel": mel_loss(y, ref), "l1": l1_loss(y, ref), "commitment": out["vq/commitment_loss"],
                  "codebook": out["vq/codebook_loss"]}
        total = (cfg.mel_weight * losses["mel"] + cfg.l1_weight * losses["l1"]
                 + cfg.commitment_weight * losses["commitment"] + cfg.codebook_weight * losses["codebook"])
        opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        window.append({k: v.item() for k, v in losses.items()} | {"total": total.item(), "grad_norm": grad_norm.item()})
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
            elapsed = time.time() - t0
            history.append({"step": step, **mean, "s_per_step": round(elapsed / len(window), 3)})
            log.info("step %d/%d %s", step, cfg.steps, history[-1])
            window, t0 = [], time.time()
        if step % cfg.save_every == 0 or step == cfg.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.getstate(),
                        "torch_rng": torch.get_rng_state(), "step": step, "history": history, "resumes": resumes},
                       state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)
            record.update(step=step, last_losses=history[-1] if history else None, history=history[::5])
            save_shipped(model, cfg, record)
    record["seconds"] = round(time.time() - start, 1)
    save_shipped(model, cfg, record)
    return record


_ARG_TYPES = {"int": int, "float": float, "str": str}


def main(argv: list[str] | None = None) -> None:
    defaults = CodecTrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(CodecTrainConfig):
        if f.type in _ARG_TYPES:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=_ARG_TYPES[f.type], default=getattr(defaults, f.name))
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/state.pt")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = CodecTrainConfig(**args)
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    print(json.dumps(train(cfg, resume), indent=1))


if __name__ == "__main__":
    main()
