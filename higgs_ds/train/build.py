"""Build the pieces the loop needs: tokenizer, the data's audio spec, the model (checked against the data,
sharded by `parallelize`), freezing / LoRA, optimizer and schedule."""

from __future__ import annotations

import logging
import math

import torch
from transformers import AutoTokenizer

from higgs_ds.audio_spec import AudioSpec, AudioSpecMismatchError, model_differences
from higgs_ds.data.shards import load_spec
from higgs_ds.errors import ConfigError
from higgs_ds.models import FAMILY_KEY, FreshModelShape, ModelFamily, family_of_config_dict
from higgs_ds.models.checkpoint_files import read_config
from higgs_ds.models.pretrained import checkpoint_audio_spec, config_from_checkpoint
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.lora import apply_lora
from higgs_ds.train.parallelize import build_model_sharded

log = logging.getLogger(__name__)


def load_tokenizer(path: str, family: ModelFamily):
    """The run's tokenizer, validated by the family (never used to choose one)."""
    tok = AutoTokenizer.from_pretrained(path)
    try:
        family.token_ids(tok)  # names the special tokens it lacks
    except ValueError as exc:  # every rank meets it alike: one line from rank 0
        raise ConfigError(str(exc), where=f"data.tokenizer={path}",
                          fix=f"use a tokenizer of the model family model.arch={family.name} (the checkpoint's own, "
                              f"or one the data was prepared with)") from None
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


def check_checkpoint_family(cfg: TrainConfig, family: ModelFamily) -> None:
    """`model.init` must be a checkpoint of the family `model.arch` names."""
    init = cfg.model.init
    config = read_config(init)
    ours = config[FAMILY_KEY] == family.name if FAMILY_KEY in config else family.reads_checkpoint(config)
    if ours:
        return
    try:
        other = f"a {family_of_config_dict(config, init).name} checkpoint"
    except ConfigError:
        other = f"no checkpoint of a known family (model_type={config.get('model_type')!r})"
    raise ConfigError(f"model.init={init} is {other}, but model.arch={family.name}", where="model.arch",
                      fix="set model.arch to the checkpoint's family, or start from a checkpoint of this one")


def model_config(cfg: TrainConfig, family: ModelFamily, tokenizer, spec: AudioSpec):
    """A fresh model shaped by the codes' spec, or the checkpoint's config checked against the tokenizer."""
    wanted = cfg.model
    if wanted.init is None:
        shape = FreshModelShape(wanted.hidden_size, wanted.intermediate_size, wanted.num_hidden_layers,
                                wanted.num_attention_heads, wanted.num_key_value_heads)
        return family.fresh_config(shape, tokenizer, spec)
    check_checkpoint_family(cfg, family)
    ids = family.token_ids(tokenizer)
    model_cfg = config_from_checkpoint(wanted.init, ids, family)  # ids fill what some config.json layouts lack
    wrong = {f: (getattr(model_cfg, f), v) for f, v in ids.items() if getattr(model_cfg, f) != v}
    if wrong:
        raise ConfigError(f"{wanted.init} and tokenizer {cfg.data.tokenizer} disagree on special-token ids "
                          f"(checkpoint, tokenizer): {wrong}", where="data.tokenizer",
                          fix="use the checkpoint's own tokenizer")
    return model_cfg


def check_data_matches_model(cfg: TrainConfig, model_cfg, spec: AudioSpec) -> None:
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


def build_model(cfg: TrainConfig, family: ModelFamily, tokenizer, ds_config: dict, spec: AudioSpec):
    model_cfg = model_config(cfg, family, tokenizer, spec)
    check_data_matches_model(cfg, model_cfg, spec)
    model = build_model_sharded(family, model_cfg, ds_config, cfg.model.init)
    apply_freeze(model, cfg.freeze, family)
    if cfg.lora.enabled:  # after the weights are loaded: adapters wrap the loaded linears
        apply_lora(model, cfg.lora, family)
    return model


def apply_freeze(model, mode: str, family: ModelFamily) -> None:
    """"audio_only": train only the family's audio parameters (audio MLPs, embeddings, head, ...)."""
    if mode == "none":
        return
    for name, p in model.named_parameters():
        p.requires_grad_(any(a in name for a in family.audio_parameters))


def build_optimizer(model, cfg: TrainConfig):
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
