"""The playground's logic, with no web framework in it: one model source (a training run or an export), its
checkpoints, voices, generation with limits, scores, and the saved generations.

    pg = Playground(PlaygroundConfig(Path("runs/demo")))
    pg.tags()                                   # the run's complete checkpoint tags, oldest first
    out = pg.generate(Request("مرحبا بكم", tag=pg.default_tag(), voice=SPEAKER, speaker=pg.voices()[0]))
    out.wav, out.sample_rate, out.codes, out.folder, out.scores

What a page may name is checked against what the source offers: a tag must be one of the run's complete
tags, a speaker one of those read from the eval shards the run's config names; no path typed in a page is
ever opened (an upload is a file the web framework received, read through `inputs.read_reference`).
Generation holds a lock (one at a time) and stops at the frame limit or, cooperatively inside the decoding
loop, at the time limit.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from higgs_ds.audio_spec import AudioSpec
from higgs_ds.codec import AudioCodec, load_codec_for_spec
from higgs_ds.data.schema import PromptConfig
from higgs_ds.data.shards import iter_tar_samples, list_shards, load_spec, tar_sample_to_utterance
from higgs_ds.errors import CheckpointError, ConfigError, DataError, UserError
from higgs_ds.inference import TTSRequest, decode_codes, generate, load_model, write_codes, write_spectrogram, write_wav
from higgs_ds.inference.loading import LoadedModel
from higgs_ds.playground.inputs import MAX_UPLOAD_BYTES, Sampling, checked_text, read_reference
from higgs_ds.playground.store import KEEP, GenerationStore
from higgs_ds.quality.scorer import ScorerConfig, SpeechScorer, build_scorer
from higgs_ds.run_dir import (
    RunCheckpoint,
    complete_tags,
    find_run_checkpoint,
    latest_tag,
    read_prompt,
    tag_listing,
)

log = logging.getLogger(__name__)

VoiceMode = Literal["zero-shot", "speaker", "upload"]
ZERO_SHOT, SPEAKER, UPLOAD = "zero-shot", "speaker", "upload"
EXPORT_TAG = "export"  # the one "tag" of an exported model
MAX_VOICES = 64  # speakers offered from the eval shards


@dataclass(frozen=True)
class PlaygroundConfig:
    source: Path  # a run dir (or its checkpoints/ or a tag dir) or an exported model folder
    save_dir: Path | None = None  # default: <run>/playground, or playground/ beside the export
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    codec_path: str | None = None  # a local copy of the codec the checkpoint's spec names
    time_limit_s: float = 120.0  # per generation, checked inside the decoding loop
    frame_limit: int = 1500  # the largest maximum length a page may ask for (25 frames = 1 s)
    keep: int = KEEP
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    scorer: ScorerConfig | None = None  # None: no scores

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0 or self.frame_limit < 1 or self.keep < 1 or self.max_upload_bytes < 1:
            raise ValueError(f"PlaygroundConfig: time_limit_s, frame_limit, keep and max_upload_bytes must be "
                             f"positive: {self}")


@dataclass(frozen=True)
class Request:
    text: str
    tag: str | None = None  # None: the default tag
    voice: VoiceMode = ZERO_SHOT
    speaker: str | None = None  # voice == "speaker": one of `Playground.voices()`
    upload: str | Path | None = None  # voice == "upload": the received file
    ref_text: str | None = None  # voice == "upload": its transcript
    sampling: Sampling = field(default_factory=Sampling)
    scene: str | None = None


@dataclass
class Generation:
    text: str  # as typed
    normalised: str  # what the model read
    tag: str
    wav: np.ndarray  # float32 mono
    sample_rate: int
    codes: np.ndarray  # [K, T]
    finished: bool  # the model ended the utterance itself
    stopped_by: str | None  # "time limit" / "frame limit" / None
    seconds: float  # generation wall time
    scores: dict[str, float]
    folder: Path  # where it was saved
    score_errors: dict[str, str] = field(default_factory=dict)  # metric -> why it could not be computed

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def duration_s(self) -> float:
        return len(self.wav) / self.sample_rate

    def summary(self) -> str:
        end = "ended by the model" if self.finished else f"stopped by the {self.stopped_by}"
        return (f"{self.tag}: {self.frames} frames, {self.duration_s:.2f} s of audio at {self.sample_rate} Hz, "
                f"{end}, generated in {self.seconds:.1f} s; saved to {self.folder}")


@dataclass
class Voice:
    """A reference voice: a speaker's utterance from the eval shards (its text and codes)."""

    name: str
    text: str
    codes: np.ndarray


def _lora_merge(state: dict, run: RunCheckpoint) -> dict:
    from higgs_ds.train.lora import LoraConfig, merged_state_dict  # peft: only for LoRA runs

    return merged_state_dict(state, run.model_config, LoraConfig.from_run_config(run.meta["train"]))


def _resolve_recorded(path: str, run_dir: Path, recorded_run_dir: str | None) -> Path:
    """A path a run's config recorded, relative to where training ran: tried from here, then from the
    folder the recorded run_dir was relative to (so `runs/demo`'s data/demo/eval is found from anywhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not recorded_run_dir or Path(recorded_run_dir).is_absolute():
        return p
    depth = len(Path(recorded_run_dir).parts)
    parents = run_dir.resolve().parents
    return parents[depth - 1] / p if depth - 1 < len(parents) else p


class Playground:
    def __init__(self, cfg: PlaygroundConfig):
        self.cfg = cfg
        source = Path(cfg.source)
        if not source.is_dir():
            raise CheckpointError(f"{source} is not a folder", where="checkpoint",
                                  fix="give a run dir or an exported model folder")
        run = find_run_checkpoint(source)  # checks the latest tag of a run: a damaged run fails here
        self.run = run
        if run is not None:
            self.ckpt_dir = run.ckpt_dir
            self.run_dir = run.ckpt_dir.parent if run.ckpt_dir.name == "checkpoints" else run.ckpt_dir
            default_save, inputs = self.run_dir / "playground", (self.ckpt_dir,)
        else:
            self.ckpt_dir = self.run_dir = None
            default_save, inputs = source.resolve().parent / "playground", (source,)
        self.source = source
        self.store = GenerationStore(cfg.save_dir or default_save, inputs, cfg.keep)
        self.scratch = Path(tempfile.mkdtemp(prefix="higgs-ds-playground-"))  # uploads are copied here
        weakref.finalize(self, shutil.rmtree, self.scratch, True)
        self._lock = threading.Lock()  # one generation (and one model load) at a time
        self._models: OrderedDict[str, tuple[LoadedModel, object]] = OrderedDict()  # tag -> (model, renderer)
        self._codec: AudioCodec | None = None
        self._voices: dict[str, Voice] | None = None
        self._scorers: dict[str, SpeechScorer] | None = None  # metric family -> its scorer

    # ---- what the source offers ------------------------------------------------------------------
    def tags(self) -> list[str]:
        return complete_tags(self.ckpt_dir) if self.ckpt_dir is not None else [EXPORT_TAG]

    def default_tag(self) -> str:
        tags = self.tags()
        latest = latest_tag(self.ckpt_dir) if self.ckpt_dir is not None else EXPORT_TAG
        return latest if latest in tags else (tags[-1] if tags else EXPORT_TAG)

    def _check_tag(self, tag: str | None, forget: bool = False) -> str:
        """`tag` (default: the default tag) if the source has it complete now. forget=True (only with the lock
        held) also drops the weights of a tag that is gone."""
        tag = tag or self.default_tag()
        if self.ckpt_dir is None:
            if tag != EXPORT_TAG:
                raise ConfigError(f"{tag!r} is not a checkpoint of {self.source}", where="checkpoint",
                                  fix=f"an exported model has one set of weights: {EXPORT_TAG!r}")
            return tag
        if tag not in self.tags():  # deleted (or never there) since the page listed it: forget its weights
            if forget:
                self._models.pop(tag, None)
            raise CheckpointError(f"checkpoint {tag!r} is not (or no longer) a complete tag of the run",
                                  where=str(self.ckpt_dir), fix=f"reload the page and pick another; "
                                                                f"{tag_listing(self.ckpt_dir)}")
        return tag

    def model(self, tag: str | None = None) -> tuple[LoadedModel, object]:
        """The model of `tag` and its family's renderer (the two most recently used stay loaded, for A/B).
        Called with the lock held (or before the page is served)."""
        tag = self._check_tag(tag, forget=True)
        if tag in self._models:
            self._models.move_to_end(tag)
            return self._models[tag]
        try:
            if self.ckpt_dir is None:
                loaded = load_model(self.source, device=self.cfg.device, dtype=self.cfg.dtype)
            else:
                loaded = load_model(self.ckpt_dir, tag, self.cfg.device, self.cfg.dtype, merge_lora=_lora_merge)
        except (FileNotFoundError, KeyError) as exc:  # removed while it was read
            raise CheckpointError(f"checkpoint {tag!r} could not be read ({exc})", where=str(self.source),
                                  fix="pick another checkpoint") from None
        if loaded.audio_spec is None:
            raise CheckpointError(f"{self.source} has no trained audio side (a plain Llama checkpoint)",
                                  where="checkpoint", fix="serve a higgs-ds run or export")
        renderer = loaded.family.make_renderer(self._tokenizer(loaded), loaded.model.config.audio_num_codebooks)
        self._models[tag] = (loaded, renderer)
        while len(self._models) > 2:
            self._models.popitem(last=False)
        return loaded, renderer

    def load(self, tag: str | None = None) -> LoadedModel:
        """Switch to `tag`: its weights loaded now (waiting for a generation in progress)."""
        with self._lock:
            return self.model(tag)[0]

    def _tokenizer(self, loaded: LoadedModel):
        from transformers import AutoTokenizer

        folder = loaded.tokenizer_dir
        if folder is None and self.run is not None:
            recorded = self.run.meta.get("train", {}).get("data", {}).get("tokenizer")
            folder = recorded and _resolve_recorded(recorded, self.run_dir, self.run.meta["train"].get("run_dir"))
        if not folder or not Path(folder).is_dir():
            raise ConfigError(f"no tokenizer found for {self.source}", where="tokenizer",
                              fix="serve the run from the folder it was trained in, or an export (it ships one)")
        return AutoTokenizer.from_pretrained(str(folder))

    def codec(self, spec: AudioSpec | None = None) -> AudioCodec:
        """The codec of `spec` (default: the default tag's); loaded once, checked against every later spec."""
        spec = spec or self.model()[0].audio_spec
        if self._codec is None:
            self._codec = load_codec_for_spec(spec, self.cfg.codec_path, self.cfg.device,
                                              what=f"{self.source}'s codes")
        spec.require_match(self._codec.spec, "the checkpoint's codes", "the codec loaded for the first one")
        return self._codec

    def data_path(self, key: str) -> Path | None:
        """A folder the run's data config names (`shards`, `eval_shards`), found from here; None for an export
        or a run whose config names none."""
        if self.run is None:
            return None
        train = self.run.meta.get("train", {})
        recorded = train.get("data", {}).get(key)
        return _resolve_recorded(recorded, self.run_dir, train.get("run_dir")) if recorded else None

    def eval_shards(self) -> Path | None:
        """The eval split the run's config names (None for an export, or a run without one)."""
        return self.data_path("eval_shards")

    def voices(self) -> list[str]:
        """Speakers of the eval shards, each with one of its utterances as the reference clip."""
        if self._voices is None:
            self._voices = {}
            shards = self.eval_shards()
            if shards is not None and shards.is_dir():
                spec, seen = load_spec(shards), set()
                samples = (sample for shard in list_shards(shards) for sample in iter_tar_samples(shard))
                with closing(samples):  # the shards are read only until MAX_VOICES speakers are found
                    for sample in samples:
                        utt = tar_sample_to_utterance(sample, spec)
                        speaker = utt.speaker or "speaker"
                        if speaker in seen:
                            continue
                        seen.add(speaker)
                        name = f"{speaker} ({utt.id})"
                        self._voices[name] = Voice(name, utt.text, utt.codes)
                        if len(self._voices) == MAX_VOICES:
                            break
            elif shards is not None:
                log.warning("the run's eval shards %s are not here: no speakers to pick", shards)
        return list(self._voices)

    # ---- generation ------------------------------------------------------------------------------
    def prompt_config(self, tag: str | None = None) -> PromptConfig:
        """The prompt layout `tag` was trained with, from its config files alone (no weights read)."""
        tag = self._check_tag(tag)
        if self.ckpt_dir is None:
            return read_prompt(self.source)
        return find_run_checkpoint(self.ckpt_dir, tag).prompt

    def normalise(self, text: str | None, tag: str | None = None) -> str:
        """The text as the model reads it (its recipe's normalisation, numbers read out when it says so), or
        the gate's ConfigError."""
        return checked_text(text, self.prompt_config(tag).text)

    def _reference(self, req: Request, loaded: LoadedModel) -> tuple[str | None, np.ndarray | None,
                                                                      np.ndarray | None, int | None]:
        """(transcript, codes, waveform for speaker similarity, its rate) of the request's voice."""
        if req.voice == ZERO_SHOT:
            return None, None, None, None
        if req.voice == SPEAKER:
            voices = self.voices()
            if req.speaker not in voices:
                raise ConfigError(f"{req.speaker!r} is not a speaker of the run's eval shards", where="speaker",
                                  fix=f"pick one of the list ({len(voices)} speakers)" if voices else
                                  "this source has no eval shards: upload a reference or use zero-shot")
            voice, codec = self._voices[req.speaker], self.codec(loaded.audio_spec)
            return voice.text, voice.codes, decode_codes(codec, torch.as_tensor(voice.codes)).numpy(), codec.sample_rate
        if req.voice == UPLOAD:
            if req.upload is None:
                raise DataError("no reference clip", where="reference audio",
                                fix="upload or record one, or choose zero-shot")
            clip = read_reference(req.upload, req.ref_text, loaded.prompt.text, self.scratch,
                                  self.cfg.max_upload_bytes)
            codes = self.codec(loaded.audio_spec).encode([torch.from_numpy(clip.wav)], clip.sample_rate)[0].numpy()
            return clip.text, codes, clip.wav, clip.sample_rate
        raise ConfigError(f"voice {req.voice!r} is not one of {ZERO_SHOT}, {SPEAKER}, {UPLOAD}", where="voice")

    def generate(self, req: Request) -> Generation:
        with self._lock:
            return self._generate(req)

    def _generate(self, req: Request) -> Generation:
        tag = self._check_tag(req.tag, forget=True)
        gen_cfg = req.sampling.generation_config(self.cfg.frame_limit)
        loaded, renderer = self.model(tag)
        normalised = checked_text(req.text, loaded.prompt.text)
        ref_text, ref_codes, ref_wav, ref_rate = self._reference(req, loaded)
        request = TTSRequest(req.text, scene=req.scene, ref_text=ref_text, ref_codes=ref_codes, id="playground")
        start = time.monotonic()
        deadline = start + self.cfg.time_limit_s
        result = generate(loaded.model, renderer, [request], gen_cfg, loaded.prompt, sync_ranks=False,
                          should_stop=lambda: time.monotonic() > deadline)
        seconds = time.monotonic() - start
        codes = result.codes[0]
        codec = self.codec(loaded.audio_spec)
        wav = decode_codes(codec, codes).float()
        stopped_by = None if result.finished[0] else ("time limit" if result.stopped else "frame limit")
        scores, score_errors = self._score(wav.numpy(), codec.sample_rate, req.text, ref_wav, ref_rate)
        settings = {"source": str(self.source), "tag": tag, "text": req.text, "normalised": normalised,
                    "voice": req.voice, "speaker": req.speaker, "ref_text": ref_text, "scene": req.scene,
                    "sampling": asdict(req.sampling), "generation": asdict(gen_cfg), "frames": int(codes.shape[1]),
                    "finished": result.finished[0], "stopped_by": stopped_by, "seconds": round(seconds, 3),
                    "sample_rate": codec.sample_rate, "scores": scores,
                    "score_errors": score_errors}
        # no Arabic in the title: matplotlib does not shape it
        title = f"{tag}, {'greedy' if gen_cfg.greedy else f'seed {gen_cfg.seed}'}"
        files = {"out.wav": lambda p: write_wav(p, wav, codec.sample_rate),
                 "codes.npy": lambda p: write_codes(p, codes),
                 "spectrogram.png": lambda p: write_spectrogram(p, wav, codec.sample_rate, title)}
        if ref_codes is not None:
            files["reference_codes.npy"] = lambda p: write_codes(p, torch.as_tensor(ref_codes))
        folder = self.store.save(files, settings)
        return Generation(req.text, normalised, tag, wav.numpy(), codec.sample_rate, codes.numpy(), result.finished[0],
                          stopped_by, seconds, scores, folder, score_errors)

    def _metric_scorers(self) -> dict[str, SpeechScorer]:
        """The scorer split into one scorer per metric family, so one that fails is named and the others kept."""
        if self._scorers is None:
            full = build_scorer(replace(self.cfg.scorer, mcd=False))  # MCD needs a recording of the same text
            parts = {"cer": replace(SpeechScorer(), transcriber=full.transcriber) if full.transcriber else None,
                     "sim": replace(SpeechScorer(), speaker_embedder=full.speaker_embedder,
                                    extra_speaker_embedders=full.extra_speaker_embedders)
                     if full.speaker_embedder or full.extra_speaker_embedders else None,
                     "dnsmos": replace(SpeechScorer(), quality=full.quality) if full.quality else None}
            self._scorers = {name: part for name, part in parts.items() if part is not None}
        return self._scorers

    def _score(self, wav: np.ndarray, rate: int, text: str, ref: np.ndarray | None,
               ref_rate: int | None) -> tuple[dict[str, float], dict[str, str]]:
        """(scores, {metric: why it failed}): a metric model failing is logged and shown, the generation kept."""
        if self.cfg.scorer is None or len(wav) == 0:
            return {}, {}
        scores, failed = {}, {}
        try:
            scorers = self._metric_scorers()
        except Exception as exc:  # noqa: BLE001 (a metric model that cannot load: no scores, the generation kept)
            log.warning("playground: the metric models could not be loaded, no scores: %s: %s", type(exc).__name__,
                        exc, exc_info=True)
            return {}, {"scorer": f"{type(exc).__name__}: {exc}"}
        for name, scorer in scorers.items():
            try:
                scores.update({k: float(v) for k, v in scorer.score_one(wav, rate, text, ref, ref_rate).items()})
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 (one metric failing must not lose the generation)
                failed[name] = f"{type(exc).__name__}: {exc}"
                log.warning("playground: the %s score failed, the generation is kept without it: %s", name,
                            failed[name], exc_info=True)
        return scores, failed
