"""What the training loader yields for the preference objectives, through the family's renderer:

- DPO (`pair_renderer`): a pair shard's sample (`codes` chosen, `rejected_codes` rejected) rendered twice
  exactly as for supervised training; a batch is the chosen samples, then the rejected ones, in one collated
  batch (one forward per step), with `pairs` = B;
- GRPO (`prompt_renderer`): the sample's generation prompt (its text and reference voice, rendered as for
  supervised training up to the position that predicts the first audio row); the target audio is unused.

The loader's bucketing, sharding, resumption and counters stay as they are: both wrappers are `Renderer`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch

from higgs_ds.data.collate import Collator, CollatorConfig
from higgs_ds.data.renderer import MakeRenderer, Renderer
from higgs_ds.data.schema import PromptConfig, Utterance
from higgs_ds.inference.prompt import PromptIds, left_pad


@dataclass
class PairSample:
    chosen: object  # RenderedSample
    rejected: object

    def __len__(self) -> int:
        return 2 * max(len(self.chosen), len(self.rejected))  # two rows of the batch

    @property
    def audio_frames(self) -> int:
        return self.chosen.audio_frames + self.rejected.audio_frames


class PairCollator:
    def __init__(self, inner: Collator) -> None:
        self.inner = inner

    def __call__(self, samples: list[PairSample]) -> dict:
        batch = self.inner([s.chosen for s in samples] + [s.rejected for s in samples])
        return {**batch, "pairs": len(samples)}


class PairRenderer:
    def __init__(self, inner: Renderer) -> None:
        self.inner, self.num_codebooks, self.pad_id = inner, inner.num_codebooks, inner.pad_id

    def render(self, utt: Utterance, prompt: PromptConfig) -> PairSample:
        if utt.rejected_codes is None:
            raise ValueError(f"sample {utt.id!r} has no rejected_codes: objective=dpo reads pair shards "
                             f"(prepare_data preferences)")
        return PairSample(self.inner.render(utt, prompt), self.inner.render(replace(utt, codes=utt.rejected_codes),
                                                                            prompt))

    def collator(self, cfg: CollatorConfig) -> PairCollator:
        return PairCollator(self.inner.collator(cfg))


@dataclass
class PromptSample:
    prompt: PromptIds
    text: str
    ref_codes: np.ndarray | None
    id: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt.input_ids)

    @property
    def audio_frames(self) -> int:
        return 0


class PromptCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[PromptSample]) -> dict:
        batch = left_pad([s.prompt for s in samples], self.pad_id)  # left: every row's next position aligns
        return {**batch, "prompts": [s.prompt for s in samples], "texts": [s.text for s in samples],
                "ref_codes": [s.ref_codes for s in samples], "ids": [s.id for s in samples], "pad_id": self.pad_id}


class PromptRenderer:
    def __init__(self, inner: Renderer, stream_bos: int, stream_eos: int) -> None:
        self.inner, self.num_codebooks, self.pad_id = inner, inner.num_codebooks, inner.pad_id
        self.stream_bos, self.stream_eos = stream_bos, stream_eos

    def render(self, utt: Utterance, prompt: PromptConfig) -> PromptSample:
        empty = replace(utt, codes=np.zeros((self.num_codebooks, 0), dtype=np.int64))
        ids, audio = self.inner.generation_prompt(empty, self.stream_bos, self.stream_eos, prompt)
        return PromptSample(PromptIds(list(ids), torch.as_tensor(audio).long()), utt.text, utt.ref_codes, utt.id)

    def collator(self, cfg: CollatorConfig) -> PromptCollator:
        return PromptCollator(self.pad_id)


def _pairs(make_renderer: MakeRenderer, tokenizer, num_codebooks: int) -> PairRenderer:
    return PairRenderer(make_renderer(tokenizer, num_codebooks))


def _prompts(make_renderer: MakeRenderer, stream_bos: int, stream_eos: int, tokenizer, num_codebooks: int):
    return PromptRenderer(make_renderer(tokenizer, num_codebooks), stream_bos, stream_eos)


def pair_renderer(make_renderer: MakeRenderer) -> MakeRenderer:
    return partial(_pairs, make_renderer)


def prompt_renderer(make_renderer: MakeRenderer, stream_bos: int, stream_eos: int) -> MakeRenderer:
    return partial(_prompts, make_renderer, stream_bos, stream_eos)
