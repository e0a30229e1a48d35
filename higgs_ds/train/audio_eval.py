"""Listening eval during training: a few fixed held-out prompts, every `audio_eval.every` steps.

For each prompt (a held-out utterance: text, optional scene and voice-cloning reference, and its
reference codes):

- teacher-forced per-codebook audio loss and accuracy (one forward with labels);
- a free-running generation (`higgs_ds.inference.generate`), compared with the reference codes:
  frame accuracy (reference frames whose K codes are all reproduced at the same index), codebook-0
  accuracy, length ratio (generated / reference frames) and whether the EOS diagonal was reached;
- on rank 0: the generation decoded to a wav, its codes (.npy) and a spectrogram PNG under
  ``<run_dir>/audio_eval/stepNNNNNN/``, logged to the metric sinks (wandb, TensorBoard) as audio + image,
  and the scalars written to metrics.jsonl (kind "audio_eval"); optional ASR / speaker-similarity scores
  (`SpeechScorer`). The references are decoded once into ``audio_eval/reference/`` (wav, codes,
  spectrogram) and the prompts' texts go into ``audio_eval/prompts.json``, for the run report.

ZeRO-3: every rank builds the same prompts and calls `run` at the same step; the model is called
identically on all ranks (one teacher-forced forward, then generation with the stop flag
all-reduced each step, see `higgs_ds.inference.generate`). Only rank 0 decodes audio and writes.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from higgs_ds import comm
from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import AudioCodec, load_codec_for_spec
from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.data.shards import iter_tar_samples, list_shards, tar_sample_to_utterance
from higgs_ds.inference import (
    GenerationConfig,
    TTSRequest,
    decode_codes,
    generate,
    write_codes,
    write_spectrogram,
    write_wav,
)
from higgs_ds.models import family_for_config
from higgs_ds.quality.scorer import ScorerConfig, SpeechScorer, build_scorer
from higgs_ds.report import LISTENING_ROWS

log = logging.getLogger(__name__)


def _eval_generation() -> GenerationConfig:
    # Greedy without RAS: deterministic, so the numbers move only when the model does.
    return GenerationConfig(max_new_frames=250, temperature=0.0, ras_window=0)


@dataclass
class AudioEvalConfig:
    every: int = 0  # steps between audio evals; 0 = off
    shards: str | None = None  # held-out split; None = the run's data.eval_shards
    num_prompts: int = 2  # from the held-out split: one per speaker first (voice-cloning ones preferred)
    train_prompts: int = 0  # also generate this many training utterances (what the model memorised)
    codec_path: str | None = None  # None: the codec the shards' audio spec names (its weights must match)
    generation: GenerationConfig = field(default_factory=_eval_generation)
    score: bool = False  # offline metrics of the generated audio on rank 0 (score/*), as `scorer` says
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        if self.every < 0 or self.num_prompts < 1 or self.train_prompts < 0:
            raise ValueError(f"audio_eval: every={self.every} and train_prompts={self.train_prompts} must be >= 0, "
                             f"num_prompts={self.num_prompts} >= 1")
        if isinstance(self.generation, dict):
            self.generation = GenerationConfig(**self.generation)
        if isinstance(self.scorer, dict):
            self.scorer = ScorerConfig(**self.scorer)


def read_utterances(split_dir: str, n: int, spec: AudioSpec, scan: int = 256) -> list[Utterance]:
    """`n` utterances of a split, the same on every rank: among the first `scan` in shard order, one per
    speaker first (so voices can be told apart), preferring one with a voice-cloning reference (without
    one, nothing tells the model whose voice to use and own-voice similarity means nothing), then the
    rest in order."""
    samples = itertools.chain.from_iterable(iter_tar_samples(s) for s in list_shards(split_dir))
    pool = [tar_sample_to_utterance(s, spec) for s in itertools.islice(samples, max(n, scan))]
    if not pool:
        raise ValueError(f"audio_eval: no utterances in {split_dir}")
    firsts: dict[str | None, Utterance] = {}
    for u in sorted(pool, key=lambda u: u.ref_codes is None):  # stable: shard order within each group
        firsts.setdefault(u.speaker, u)
    chosen = {id(u) for u in firsts.values()}
    ordered = [u for u in pool if id(u) in chosen] + [u for u in pool if id(u) not in chosen]
    return ordered[:n]


def compare_codes(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Generated codes [K, T_g] against reference codes [K, T_r], index by index."""
    t_ref, t_gen = reference.shape[1], generated.shape[1]
    n = min(t_ref, t_gen)
    same = generated[:, :n] == reference[:, :n]
    return {"frame_acc": float(same.all(dim=0).sum()) / max(t_ref, 1),
            "cb0_acc": float(same[0].sum()) / max(t_ref, 1),
            "length_ratio": t_gen / max(t_ref, 1)}


class AudioEvaluator:
    def __init__(self, model, tokenizer, codec: AudioCodec | None, utterances: list[Utterance],
                 generation: GenerationConfig, prompt: PromptConfig | None = None,
                 scorer: SpeechScorer | None = None, name: str = ""):
        """`codec` may be None on ranks other than 0 (they never decode audio). `name` (e.g. "train")
        prefixes the metric keys and names the output folder; "" is the held-out evaluation."""
        self.name = name
        self.model = model
        self.renderer = family_for_config(model.config).make_renderer(tokenizer, model.config.audio_num_codebooks)
        self.collate = self.renderer.collator(CollatorConfig.from_model_config(model.config))
        self.codec = codec
        self.utterances = utterances
        # built now: a transcript the text gate refuses (shards built before it existed) stops the run at its
        # start, not at the first listening eval
        self.requests = [TTSRequest(u.text, scene=u.scene, ref_text=u.ref_text, ref_codes=u.ref_codes, id=u.id)
                         for u in utterances]
        self.generation = generation
        self.prompt = prompt or PromptConfig()  # must be the training prompt layout
        self.scorer = scorer
        self.rank = comm.rank()
        if self.rank == 0 and codec is None:
            raise ValueError("AudioEvaluator: rank 0 needs a codec to decode the generated audio")

    @classmethod
    def from_config(cls, cfg: AudioEvalConfig, model, tokenizer, eval_shards: str | None, spec: AudioSpec,
                    prompt: PromptConfig | None = None, scorer: SpeechScorer | None = None,
                    train_shards: str | None = None) -> list[AudioEvaluator]:
        """The held-out evaluator and, with `cfg.train_prompts` and `train_shards`, one over training
        utterances ("train/*": what the model memorised). `spec`: the audio spec of the run's codes; it names
        the codec that decodes the generations (loaded once, on rank 0)."""
        split = cfg.shards or eval_shards
        if not split:
            raise ValueError("audio_eval: set audio_eval.shards or data.eval_shards")
        rank = comm.rank()
        codec = load_codec_for_spec(spec, cfg.codec_path, what="the training shards' codes") if rank == 0 else None
        if scorer is None and cfg.score and rank == 0:
            scorer = build_scorer(cfg.scorer)
        made = [cls(model, tokenizer, codec, read_utterances(split, cfg.num_prompts, spec), cfg.generation, prompt,
                    scorer)]
        if cfg.train_prompts and train_shards:
            made.append(cls(model, tokenizer, codec, read_utterances(train_shards, cfg.train_prompts, spec),
                            cfg.generation, prompt, scorer, name="train"))
        return made

    def _device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def teacher_forced(self) -> dict[str, float]:
        samples = [self.renderer.render(u, self.prompt) for u in self.utterances]
        batch = {k: v.to(self._device()) for k, v in self.collate(samples).items()}
        sums = self.model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                          audio_labels=batch["audio_labels"]).loss_sums
        count = sums.audio_count.clamp(min=1)
        loss, acc = (sums.audio_sum / count).tolist(), (sums.audio_correct / count).tolist()
        out = {"tf/loss_audio": float(np.mean(loss)), "tf/acc_audio": float(np.mean(acc))}
        for k, (l_k, a_k) in enumerate(zip(loss, acc, strict=True)):
            out[f"tf/loss_audio_cb{k}"], out[f"tf/acc_audio_cb{k}"] = l_k, a_k
        return out

    def run(self, step: int, run_dir: str | Path, writer=None) -> dict[str, float]:
        """Evaluate, save and log; returns the scalar metrics (the same on every rank, except the optional
        `score/*` entries, computed on rank 0 only)."""
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = self.teacher_forced()
            result = generate(self.model, self.renderer, self.requests, self.generation, self.prompt)
        finally:
            self.model.train(was_training)
        refs = [torch.as_tensor(u.codes).long() for u in self.utterances]
        per_prompt = [compare_codes(c, r) for c, r in zip(result.codes, refs, strict=True)]
        for key in ("frame_acc", "cb0_acc", "length_ratio"):
            metrics[f"gen/{key}"] = float(np.mean([p[key] for p in per_prompt]))
        metrics["gen/stop_rate"] = float(np.mean(result.finished))
        metrics["gen/frames"] = float(np.mean([c.shape[1] for c in result.codes]))
        if self.rank == 0:
            metrics.update(self._save_and_log(step, Path(run_dir), result.codes, refs, writer))
        if self.name:
            metrics = {f"{self.name}/{k}": v for k, v in metrics.items()}
        if writer is not None:
            writer.write(step, metrics, kind="audio_eval")
        return metrics

    def _save_and_log(self, step: int, run_dir: Path, codes: list[torch.Tensor], refs: list[torch.Tensor],
                      writer) -> dict[str, float]:
        root = run_dir / "audio_eval" / self.name if self.name else run_dir / "audio_eval"
        out_dir = root / f"step{step:06d}"
        sr = self.codec.sample_rate
        key = f"audio_eval/{self.name}/" if self.name else "audio_eval/"
        wavs, audio, images = [], {}, {}  # audio / images: the tags the metric sinks log
        for utt, c in zip(self.utterances, codes, strict=True):
            wav = decode_codes(self.codec, c)
            wavs.append(wav.numpy())
            write_wav(out_dir / f"{utt.id}.wav", wav, sr)
            write_codes(out_dir / f"{utt.id}.npy", c)
            png = write_spectrogram(out_dir / f"{utt.id}.png", wav, sr, title=f"step {step} · {utt.id}")
            audio[f"{key}{utt.id}/audio"], images[f"{key}{utt.id}/spectrogram"] = (wavs[-1], sr), png
        ref_wavs = [decode_codes(self.codec, r).numpy() for r in refs]
        ref_dir = root / "reference"
        for utt, wav, ref in zip(self.utterances, ref_wavs, refs, strict=True):
            if not (ref_dir / f"{utt.id}.wav").is_file():  # the targets, decoded once for comparison
                write_wav(ref_dir / f"{utt.id}.wav", torch.from_numpy(wav), sr)
                write_codes(ref_dir / f"{utt.id}.npy", ref)
                png = write_spectrogram(ref_dir / f"{utt.id}.png", torch.from_numpy(wav), sr,
                                        title=f"{utt.id} · target")
                audio[f"{key}{utt.id}/reference"], images[f"{key}{utt.id}/reference_spectrogram"] = (wav, sr), png
        if not (root / "prompts.json").is_file():  # what each prompt says, for the run report
            prompts = {u.id: {"text": u.text, "speaker": u.speaker, "ref_text": u.ref_text} for u in self.utterances}
            (root / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False, indent=1), encoding="utf-8")
        scores = {}
        if self.scorer is not None:
            other = self.scorer.similarity_to_other_voices(wavs, sr, ref_wavs, [u.speaker for u in self.utterances])
            if other is not None:
                scores["score/sim_other_voices"] = other
            scores |= {f"score/{k}": v for k, v in self.scorer.score(wavs, sr, [u.text for u in self.utterances],
                                                                    ref_wavs).items()}
        if writer is not None:
            writer.write_media(step, audio, images)
        log.info("audio eval @ %d: %s", step, out_dir)
        return scores


# (label, metric key, format) of the listening table printed at the end of a run (and in its report)
_SUMMARY_ROWS = LISTENING_ROWS


def listening_summary(run_dir: str | Path) -> str | None:
    """The listening eval's first vs last figures per prompt set, and where to listen: a table for the log."""
    from higgs_ds.train.metrics import read_metrics

    records = read_metrics(Path(run_dir) / "metrics.jsonl", kind="audio_eval")
    if not records:
        return None
    by_step: dict[int, dict] = {}
    for record in records:  # the held-out and training-prompt evaluators write one record each per step
        by_step.setdefault(record["step"], {}).update(record)
    first, last = by_step[min(by_step)], by_step[max(by_step)]
    lines = [f"listening eval, step {first['step']} -> {last['step']}:"]
    for name, label in (("", "held-out prompts"), ("train/", "training prompts (memorised)")):
        rows = [(text, fmt, name + key) for text, key, fmt in _SUMMARY_ROWS if name + key in last]
        if not rows:
            continue
        lines.append(f"  {label}")
        for text, fmt, key in rows:
            before = fmt.format(first[key]) if key in first else "-"
            lines.append(f"    {text:<28} {before:>8} -> {fmt.format(last[key]):>8}")
        folder = Path(run_dir) / "audio_eval" / name.rstrip("/") / f"step{last['step']:06d}"
        wavs = sorted(folder.glob("*.wav"))
        if wavs:
            lines.append(f"    listen: {wavs[0]}  (target: {folder.parent / 'reference' / wavs[0].name})")
    return "\n".join(lines)
