"""`Renderer`: what a model family's prompt renderer offers the data path and generation.

The data path never chooses a prompt layout: the trainer passes the family's `make_renderer`
(`higgs_ds.models.ModelFamily`), and the loader's workers build their renderer with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.render import RenderedSample
from higgs_ds.data.schema import PromptConfig, Utterance


class Renderer(Protocol):
    num_codebooks: int
    pad_id: int  # the id of padded positions

    def render(self, utt: Utterance, prompt: PromptConfig) -> RenderedSample:
        """One stored utterance as a training sample (its target audio trained, any reference not)."""

    def collator(self, cfg: CollatorConfig) -> Collator:
        """The collator of this layout's batches (`higgs_ds.data.collate`'s batch contract)."""

    def generation_prompt(self, utt: Utterance, stream_bos: int, stream_eos: int,
                          prompt: PromptConfig) -> tuple[list[int], torch.Tensor]:
        """The prompt that generates `utt`'s audio (its codes are empty): (ids ending with the position that
        predicts the first audio row, the delayed audio rows of the prompt's audio positions [N, K])."""


# (tokenizer, codebooks) -> Renderer: a family's `make_renderer`, raising ValueError on a tokenizer it cannot use
MakeRenderer = Callable[[object, int], Renderer]
