"""Higgs Audio v2: a Llama backbone whose layers have a text and an audio MLP (DualFFN, shared attention),
8 codebooks of 1024 codes + 2 stream ids with the delay pattern, separate text and audio heads, ChatML
prompts. Reads Boson's layout, transformers' `HiggsAudioV2ForConditionalGeneration` and plain Llama."""

from higgs_ds.models.delay_decoding import DelayPatternState
from higgs_ds.models.family import ModelFamily
from higgs_ds.models.higgs_v2 import checkpoint
from higgs_ds.models.higgs_v2.config import (
    HiggsAudioConfig,
    fresh_config,
    released_config,
    tiny_config,
    token_ids_from_tokenizer,
)
from higgs_ds.models.higgs_v2.model import DualFFNDecoderLayer, HiggsAudioModel
from higgs_ds.models.higgs_v2.prompt import HIGGS_SPECIAL_TOKENS, ChatMLRenderer

FAMILY = ModelFamily(
    name="higgs_v2_dualffn",
    model_cls=HiggsAudioModel,
    config_cls=HiggsAudioConfig,
    fresh_config=fresh_config,
    tiny_config=tiny_config,
    released_config=released_config,
    config_to_dict=HiggsAudioConfig.to_boson_dict,
    config_from_dict=HiggsAudioConfig.from_dict,
    token_ids=token_ids_from_tokenizer,
    special_tokens=HIGGS_SPECIAL_TOKENS,
    make_renderer=ChatMLRenderer,
    decoding_state=DelayPatternState,
    reads_checkpoint=checkpoint.reads_checkpoint,
    checkpoint_config=checkpoint.checkpoint_config,
    checkpoint_state_dict=checkpoint.checkpoint_state_dict,
    checkpoint_audio_spec=checkpoint.checkpoint_audio_spec,
    export_layouts=("hf", "boson"),
    save_checkpoint=checkpoint.save_checkpoint,
    lora_groups={"attention": r"self_attn\.(q|k|v|o)_proj", "text_mlp": r"mlp\.(gate|up|down)_proj",
                 "audio_mlp": r"audio_mlp\.(gate|up|down)_proj"},
    lora_fully_trained={"train_audio_embeddings": ("audio_codebook_embeddings",),
                        "train_audio_head": ("audio_decoder_proj.audio_lm_head",)},
    audio_parameters=("audio_mlp.", "audio_input_layernorm.", "audio_post_attention_layernorm.",
                      "audio_codebook_embeddings.", "audio_decoder_proj.audio_lm_head."),
    # the fused routed-FFN kernel reads the MLP weights of a whole layer directly
    zero3_leaf_modules=lambda fused_kernels: [DualFFNDecoderLayer] if fused_kernels else [],
)
