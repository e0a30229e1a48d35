"""Data pipeline: manifests -> codec codes -> WebDataset shards -> resumable streaming model batches.

Public API (see docs/data.md):
    build_loader(LoaderConfig, tokenizer, make_renderer, rank, world_size) -> StreamingLoader
        (state_dict/load_state_dict/metrics); make_renderer is the model family's (`ModelFamily.make_renderer`)
    build_eval_batches(LoaderConfig, tokenizer, make_renderer, rank, world_size) -> list of batches
    Collator / Renderer / RenderedSample: the batch contract and what a family's prompt renderer offers
    build_delay_pattern / revert_delay_pattern: shared with generation
"""

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.delay_pattern import build_delay_pattern, revert_delay_pattern, strip_delayed_segment
from higgs_ds.data.eval_batches import build_eval_batches
from higgs_ds.data.loader import DataStateMismatchError, LoaderConfig, StreamingLoader, build_loader
from higgs_ds.data.render import RenderedSample
from higgs_ds.data.renderer import Renderer
from higgs_ds.data.schema import ChatMLSample, PromptConfig, Utterance, utterance_to_chatml
from higgs_ds.data.stream import StreamConfig
from higgs_ds.data.text import ArabicTextConfig, normalize_arabic

__all__ = [
    "ArabicTextConfig", "ChatMLSample", "Collator",
    "CollatorConfig", "LoaderConfig", "DataStateMismatchError", "PromptConfig", "RenderedSample", "Renderer",
    "StreamConfig", "StreamingLoader", "Utterance", "build_delay_pattern", "build_eval_batches", "build_loader",
    "strip_delayed_segment", "normalize_arabic", "revert_delay_pattern", "utterance_to_chatml",
]
