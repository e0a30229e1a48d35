"""Data pipeline: manifests -> codec codes -> WebDataset shards -> resumable streaming model batches.

Public API (see the "Data" section of README.md):
    build_loader(DataConfig, tokenizer, rank, world_size) -> StreamingLoader (state_dict/load_state_dict/metrics)
    build_eval_batches(DataConfig, tokenizer, rank, world_size) -> list of batches
    Collator / ChatMLRenderer / SpecialTokens: the batch contract and prompt rendering
    build_delay_pattern / revert_delay_pattern: shared with generation
"""

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import (
                                         AUDIO_STREAM_BOS,
                                         AUDIO_STREAM_EOS,
                                         build_delay_pattern,
                                         codes_from_delayed_segment,
                                         revert_delay_pattern,
)
from higgs_ds.data.loader import DataConfig, DataStateMismatchError, StreamingLoader, build_eval_batches, build_loader
from higgs_ds.data.render import ChatMLRenderer, RenderedSample, SpecialTokens
from higgs_ds.data.schema import ChatMLSample, PromptConfig, Utterance, utterance_to_chatml
from higgs_ds.data.stream import StreamConfig
from higgs_ds.data.text import ArabicTextConfig, normalize_arabic

__all__ = [
    "AUDIO_STREAM_BOS", "AUDIO_STREAM_EOS", "ArabicTextConfig", "ChatMLRenderer", "ChatMLSample", "Collator",
    "CollatorConfig", "DataConfig", "DataStateMismatchError", "PromptConfig", "RenderedSample", "SpecialTokens",
    "StreamConfig", "StreamingLoader", "Utterance", "build_delay_pattern", "build_eval_batches", "build_loader",
    "codes_from_delayed_segment", "normalize_arabic", "revert_delay_pattern", "utterance_to_chatml",
]
