"""Generation for every model family: prompts, delay-pattern decoding with a KV cache, codes -> audio.

    from higgs_ds.inference import GenerationConfig, TTSRequest, generate, load_model
    loaded = load_model("runs/demo")                       # run dir, checkpoint tag dir or exported dir
    renderer = loaded.family.make_renderer(tokenizer, loaded.model.config.audio_num_codebooks)
    result = generate(loaded.model, renderer, [TTSRequest("مرحبا بكم")], GenerationConfig(seed=0))
    result.codes[0]                                        # [K, T] codec codes
"""

from higgs_ds.data.text import normalize_for_eval
from higgs_ds.inference.audio import decode_codes, write_codes, write_spectrogram, write_wav
from higgs_ds.inference.config import GenerationConfig
from higgs_ds.inference.generate import GenerationResult, generate, generate_from_ids
from higgs_ds.inference.loading import LoadedModel, load_model
from higgs_ds.inference.prompt import PromptIds, TTSRequest, build_prompt, left_pad
from higgs_ds.models.delay_decoding import DelayPatternState, codes_from_generated_segment

__all__ = [
    "DelayPatternState", "GenerationConfig", "GenerationResult", "LoadedModel", "PromptIds",
    "TTSRequest", "build_prompt", "codes_from_generated_segment", "decode_codes", "generate",
    "generate_from_ids", "left_pad", "load_model", "normalize_for_eval", "write_codes", "write_spectrogram",
    "write_wav",
]
