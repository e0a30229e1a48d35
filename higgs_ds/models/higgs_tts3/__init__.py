"""Higgs TTS 3: a Qwen3 backbone with one fused audio table, tied as embedding and head, 8 codebooks with the
delay pattern (no BOS/EOS columns), no text head and no text loss. Reads and writes the released layout,
bundled codec tensors included."""

from higgs_ds.models.family import ModelFamily
from higgs_ds.models.higgs_tts3 import checkpoint
from higgs_ds.models.higgs_tts3.config import (
    HiggsTTS3Config,
    fresh_config,
    released_tts3_config,
    tiny_tts3_config,
    tts3_token_ids,
)
from higgs_ds.models.higgs_tts3.decoding import Tts3DelayState
from higgs_ds.models.higgs_tts3.model import HiggsTTS3Model
from higgs_ds.models.higgs_tts3.prompt import Tts3Renderer
from higgs_ds.models.higgs_tts3.tokens import TTS3_TOKENS

AUDIO_TABLE = ("audio_table",)  # embedding and head are one table: either LoRA flag trains it in full

FAMILY = ModelFamily(
    name="higgs_tts3",
    model_cls=HiggsTTS3Model,
    config_cls=HiggsTTS3Config,
    fresh_config=fresh_config,
    tiny_config=tiny_tts3_config,
    released_config=released_tts3_config,
    config_to_dict=HiggsTTS3Config.to_boson_dict,
    config_from_dict=HiggsTTS3Config.from_dict,
    token_ids=tts3_token_ids,
    special_tokens=("<|endoftext|>", *TTS3_TOKENS.values()),
    make_renderer=Tts3Renderer,
    decoding_state=Tts3DelayState,
    reads_checkpoint=checkpoint.reads_checkpoint,
    checkpoint_config=checkpoint.checkpoint_config,
    checkpoint_state_dict=checkpoint.checkpoint_state_dict,
    checkpoint_audio_spec=checkpoint.checkpoint_audio_spec,
    export_layouts=("released",),
    save_checkpoint=checkpoint.save_checkpoint,
    lora_groups={"attention": r"self_attn\.(q|k|v|o)_proj", "text_mlp": r"mlp\.(gate|up|down)_proj"},
    lora_fully_trained={"train_audio_embeddings": AUDIO_TABLE, "train_audio_head": AUDIO_TABLE},
    audio_parameters=("audio_table.",),
)
