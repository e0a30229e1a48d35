"""Build the pieces the loop needs: tokenizer, the data's audio spec, the model (checked against the data,
sharded by `parallelize`), freezing / LoRA, optimizer and schedule."""

from __future__ import annotations

import logging
import math

import torch
from transformers import AutoTokenizer

from higgs_ds.audio_spec import AudioSpec, AudioSpecMismatchError, model_differences
from higgs_ds.data.render_tts3 import is_tts3_tokenizer
from higgs_ds.data.shards import load_spec
from higgs_ds.errors import ConfigError
from higgs_ds.model.checkpoint import checkpoint_audio_spec, config_from_checkpoint
from higgs_ds.model.config import HiggsAudioConfig, tiny_config, token_ids_from_tokenizer
from higgs_ds.model.modeling import HiggsAudioModel
from higgs_ds.model.tts3_config import HiggsTTS3Config, tiny_tts3_config, tts3_token_ids
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.lora import apply_lora
from higgs_ds.train.parallelize import build_model_sharded

log = logging.getLogger(__name__)


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(path)
    try:
        tts3_token_ids(tok) if is_tts3_tokenizer(tok) else token_ids_from_tokenizer(tok)  # names missing tokens
    except ValueError as exc:  # every rank meets it alike: one line from rank 0
        raise ConfigError(str(exc), where=f"data.tokenizer={path}",
                          fix="use the tokenizer the data was prepared for (it adds the Higgs Audio tokens)") from None
    return tok


def data_audio_spec(cfg: TrainConfig) -> AudioSpec:
    """The audio spec of the run's codes: the train shards', which the eval shards must share."""
    spec = load_spec(cfg.data.shards)
    for split in {cfg.data.eval_shards, cfg.audio_eval.shards} - {None}:
        load_spec(split).require_match(spec, f"eval shards {split}", f"train shards {cfg.data.shards}")
    k = spec.num_codebooks
    if cfg.loss.codebook_weights is not None and len(cfg.loss.codebook_weights) != k:
        raise ValueError(f"loss.codebook_weights has {len(cfg.loss.codebook_weights)} entries; the shards' codes "
                         f"have {k} codebooks ({cfg.data.shards})")
    return spec


def model_config(cfg: TrainConfig, tokenizer, spec: AudioSpec) -> HiggsAudioConfig:
    """A fresh model shaped by the codes' spec, or the checkpoint's config checked against the tokenizer."""
    wanted = cfg.model
    if wanted.arch == "higgs_tts3" or is_tts3_tokenizer(tokenizer):
        return tts3_model_config(cfg, tokenizer, spec)
    ids = token_ids_from_tokenizer(tokenizer)
    if wanted.init is None:
        return tiny_config(vocab_size=len(tokenizer), hidden_size=wanted.hidden_size,
                           intermediate_size=wanted.intermediate_size, num_hidden_layers=wanted.num_hidden_layers,
                           num_attention_heads=wanted.num_attention_heads,
                           num_key_value_heads=wanted.num_key_value_heads,
                           head_dim=wanted.hidden_size // wanted.num_attention_heads,
                           audio_num_codebooks=spec.num_codebooks,
                           audio_codebook_size=spec.codebook_size, audio_stream_bos_id=spec.stream_bos,
                           audio_stream_eos_id=spec.stream_eos, use_delay_pattern=spec.delay_pattern, **ids)
    model_cfg = config_from_checkpoint(wanted.init, ids)  # ids fill what plain Llama / transformers-port configs lack
    return checked_against_tokenizer(cfg, model_cfg, ids)


def checked_against_tokenizer(cfg: TrainConfig, model_cfg, ids: dict[str, int]):
    if model_cfg.arch != cfg.model.arch:
        raise ValueError(f"model.arch={cfg.model.arch} but {cfg.model.init} is a {model_cfg.arch} checkpoint")
    wrong = {f: (getattr(model_cfg, f), v) for f, v in ids.items() if getattr(model_cfg, f) != v}
    if wrong:
        raise ValueError(f"{cfg.model.init} and tokenizer {cfg.data.tokenizer} disagree on special-token ids "
                         f"(checkpoint, tokenizer): {wrong}")
    return model_cfg


def tts3_model_config(cfg: TrainConfig, tokenizer, spec: AudioSpec) -> HiggsTTS3Config:
    """Higgs TTS 3: a fresh tiny stand-in or the checkpoint's config, its ids checked against the tokenizer."""
    wanted = cfg.model
    if wanted.arch != "higgs_tts3" or not is_tts3_tokenizer(tokenizer):
        raise ValueError(f"model.arch={wanted.arch} and tokenizer {cfg.data.tokenizer} (prompt layout "
                         f"{'TTS 3' if is_tts3_tokenizer(tokenizer) else 'v2 ChatML'}) do not match: Higgs TTS 3 "
                         f"needs model.arch=higgs_tts3 and the checkpoint's own tokenizer")
    ids = tts3_token_ids(tokenizer)
    if wanted.init is None:
        return tiny_tts3_config(vocab_size=len(tokenizer) + 2, hidden_size=wanted.hidden_size,
                                intermediate_size=wanted.intermediate_size, num_hidden_layers=wanted.num_hidden_layers,
                                num_attention_heads=wanted.num_attention_heads,
                                num_key_value_heads=wanted.num_key_value_heads,
                                head_dim=wanted.hidden_size // wanted.num_attention_heads,
                                audio_num_codebooks=spec.num_codebooks, audio_codebook_size=spec.codebook_size,
                                audio_stream_bos_id=spec.stream_bos, audio_stream_eos_id=spec.stream_eos, **ids)
    return checked_against_tokenizer(cfg, config_from_checkpoint(wanted.init, ids), ids)


def check_data_matches_model(cfg: TrainConfig, model_cfg: HiggsAudioConfig, spec: AudioSpec) -> None:
    """The shards' codes must be what the model embeds (codebooks, stream ids, delay pattern) and, when
    starting from a checkpoint, come from the codec its audio side was trained on."""
    shards = f"train shards {cfg.data.shards}"
    problems = model_differences(spec, model_cfg)
    if problems:
        raise AudioSpecMismatchError(f"model and data disagree: {'; '.join(problems)}\n  {shards}: "
                                     f"{spec.describe()}")
    trained_on = checkpoint_audio_spec(cfg.model.init) if cfg.model.init else None
    if trained_on is None:
        return
    if cfg.model.allow_audio_spec_change:
        if trained_on.differences(spec):
            log.warning("training %s codes into %s, whose audio side was trained on %s (allowed by "
                        "model.allow_audio_spec_change)", spec.codec, cfg.model.init, trained_on.describe())
        return
    trained_on.require_match(spec, f"checkpoint {cfg.model.init} was trained on", shards, hint=(
        "Codes from another codec are foreign to this checkpoint: training on them destroys what its audio side "
        "learned. Encode the data with the checkpoint's codec (prepare_data build --codec-path ...), or set "
        "model.allow_audio_spec_change=true to re-learn the audio side on purpose."))


def build_model(cfg: TrainConfig, tokenizer, ds_config: dict, spec: AudioSpec) -> HiggsAudioModel:
    model_cfg = model_config(cfg, tokenizer, spec)
    check_data_matches_model(cfg, model_cfg, spec)
    model = build_model_sharded(model_cfg, ds_config, cfg.model.init)
    apply_freeze(model, cfg.freeze)
    if cfg.lora.enabled:  # after the weights are loaded: adapters wrap the loaded linears
        apply_lora(model, cfg.lora)
    return model


def apply_freeze(model: HiggsAudioModel, mode: str) -> None:
    """"audio_only": train the audio MLPs and norms, codebook embeddings and audio head only."""
    if mode == "none":
        return
    audio = ("audio_mlp.", "audio_input_layernorm.", "audio_post_attention_layernorm.",
             "audio_codebook_embeddings.", "audio_decoder_proj.audio_lm_head.", "audio_table.")
    for name, p in model.named_parameters():
        p.requires_grad_(any(a in name for a in audio))


def build_optimizer(model: HiggsAudioModel, cfg: TrainConfig):
    """AdamW (no decay on norms and embeddings) and linear warmup + cosine decay to min_lr_ratio."""
    optim = cfg.optim
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if "norm" in name or "embed" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]  # LoRA may train no norm/embedding: ZeRO drops empty groups
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)

    def lr_factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / (optim.warmup_steps + 1)
        progress = min(1.0, (step - optim.warmup_steps) / max(1, cfg.steps - optim.warmup_steps))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
