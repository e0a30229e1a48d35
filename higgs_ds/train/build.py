"""Build the pieces the loop needs: tokenizer, model (under ZeRO-3 `zero.Init`), optimizer, schedule."""

from __future__ import annotations

import logging
import math

import deepspeed
import torch
from deepspeed.utils import set_z3_leaf_modules
from transformers import AutoTokenizer

from higgs_ds import ops
from higgs_ds.data.delay_pattern import AUDIO_STREAM_BOS, AUDIO_STREAM_EOS
from higgs_ds.model.checkpoint import config_from_checkpoint, load_weights
from higgs_ds.model.config import HiggsAudioConfig, tiny_config
from higgs_ds.model.modeling import DualFFNDecoderLayer, HiggsAudioModel
from higgs_ds.train.config import TrainConfig

log = logging.getLogger("higgs_ds")

# config field -> the special token whose id it must hold
_TOKEN_FIELDS = {
    "audio_in_token_idx": "<|AUDIO|>",
    "audio_out_token_idx": "<|AUDIO_OUT|>",
    "audio_out_bos_token_id": "<|audio_out_bos|>",
    "audio_eos_token_id": "<|audio_eos|>",
    "pad_token_id": "<|end_of_text|>",
}


def load_tokenizer(path: str):
    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in _TOKEN_FIELDS.values() if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ValueError(f"tokenizer {path} lacks the Higgs Audio special tokens {missing}")
    return tok


def token_ids(tokenizer) -> dict[str, int]:
    return {field: tokenizer.convert_tokens_to_ids(tok) for field, tok in _TOKEN_FIELDS.items()}


def model_config(cfg: TrainConfig, tokenizer) -> HiggsAudioConfig:
    ids = token_ids(tokenizer)
    m = cfg.model
    if m.init is None:
        return tiny_config(vocab_size=len(tokenizer), hidden_size=m.hidden_size,
                           intermediate_size=m.intermediate_size, num_hidden_layers=m.num_hidden_layers,
                           num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads,
                           head_dim=m.hidden_size // m.num_attention_heads,
                           audio_num_codebooks=cfg.data.train.stream.num_codebooks, **ids)
    mcfg = config_from_checkpoint(m.init, **ids)  # ids only used when starting from plain Llama
    wrong = {f: (getattr(mcfg, f), v) for f, v in ids.items() if getattr(mcfg, f) != v}
    if wrong:
        raise ValueError(f"{m.init} and tokenizer {cfg.data.tokenizer} disagree on special-token ids "
                         f"(checkpoint, tokenizer): {wrong}")
    return mcfg


def check_data_matches_model(mcfg: HiggsAudioConfig, stream) -> None:
    """The shards' codes must be what the model embeds: same codebooks, stream ids and delay pattern."""
    problems = []
    if (mcfg.audio_num_codebooks, mcfg.audio_codebook_size) != (stream.num_codebooks, stream.codebook_size):
        problems.append(f"model has {mcfg.audio_num_codebooks}x{mcfg.audio_codebook_size} codebooks, data "
                        f"{stream.num_codebooks}x{stream.codebook_size}")
    if (mcfg.audio_stream_bos_id, mcfg.audio_stream_eos_id) != (AUDIO_STREAM_BOS, AUDIO_STREAM_EOS):
        problems.append(f"model stream BOS/EOS {mcfg.audio_stream_bos_id}/{mcfg.audio_stream_eos_id}, data "
                        f"{AUDIO_STREAM_BOS}/{AUDIO_STREAM_EOS}")
    if not mcfg.use_delay_pattern:
        problems.append("model has use_delay_pattern=False, the data pipeline writes delay-pattern codes")
    if problems:
        raise ValueError("model and data disagree: " + "; ".join(problems))


def build_model(cfg: TrainConfig, tokenizer, ds_config: dict) -> HiggsAudioModel:
    mcfg = model_config(cfg, tokenizer)
    check_data_matches_model(mcfg, cfg.data.train.stream)
    model = instantiate_model(mcfg, ds_config, cfg.model.init)
    apply_freeze(model, cfg.freeze)
    return model


def instantiate_model(mcfg: HiggsAudioConfig, ds_config: dict, init: str | None = None) -> HiggsAudioModel:
    """Construct under `zero.Init` for ZeRO-3, so no rank ever holds the whole model, then fill the
    weights (gathered one module at a time) from a checkpoint or a fresh initialisation."""
    zero3 = ds_config.get("zero_optimization", {}).get("stage", 0) == 3
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    if zero3:
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = HiggsAudioModel(mcfg)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if ops.uses_triton(device):  # the fused routed-FFN kernel reads the MLP weights directly
            set_z3_leaf_modules(model, [DualFFNDecoderLayer])
    else:
        model = HiggsAudioModel(mcfg).to(dtype)
    if init is None:
        for module in model.modules():  # params partitioned under ZeRO-3: gather, init on rank 0, scatter
            with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=0,
                                                   enabled=zero3):
                model.init_module(module)
    else:
        layout = load_weights(model, init)
        log.info("initialised from %s (%s layout)", init, layout)
    return model


def apply_freeze(model: HiggsAudioModel, mode: str) -> None:
    """"audio_only": train the audio MLPs and norms, codebook embeddings and audio head only."""
    if mode == "none":
        return
    audio = ("audio_mlp.", "audio_input_layernorm.", "audio_post_attention_layernorm.",
             "audio_codebook_embeddings.", "audio_decoder_proj.audio_lm_head.")
    for name, p in model.named_parameters():
        p.requires_grad_(any(a in name for a in audio))


def build_optimizer(model: HiggsAudioModel, cfg: TrainConfig):
    """AdamW (no decay on norms and embeddings) and linear warmup + cosine decay to min_lr_ratio."""
    o = cfg.optim
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if "norm" in name or "embed" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)

    def lr_factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / (o.warmup_steps + 1)
        progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
