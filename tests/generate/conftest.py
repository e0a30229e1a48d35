"""Shared fixtures: a tiny model overfit, in process, on two demo-like samples
(Arabic demo sentences with seeded random codes; one has a voice-cloning reference and a scene), and that
model exported with a seeded demo codec."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from higgs_ds.data.collate import CollatorConfig
from higgs_ds.data.demo import demo_sentences
from higgs_ds.data.schema import Utterance, utterance_to_chatml
from higgs_ds.models.higgs_v2.config import tiny_config
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer
from higgs_ds.models.loss import LossWeights, combine

K = 8


@dataclass
class Overfit:
    model: HiggsAudioModel
    renderer: ChatMLRenderer
    tokenizer: object
    utterances: list[Utterance]
    steps: int


def model_config_for(tokenizer, **overrides):
    sp = ChatMLRenderer(tokenizer, K).special
    return tiny_config(vocab_size=len(tokenizer), audio_in_token_idx=sp.audio_in, audio_out_token_idx=sp.audio_out,
                       audio_out_bos_token_id=sp.audio_out_bos, audio_eos_token_id=sp.audio_eos,
                       pad_token_id=sp.pad, **overrides)


def demo_like_utterances() -> list[Utterance]:
    rng = np.random.default_rng(0)
    sentences = demo_sentences()
    codes = lambda t: rng.integers(0, 1024, size=(K, t)).astype(np.int16)  # noqa: E731
    return [
        Utterance("plain", sentences[0], codes(12), speaker="spk0"),
        Utterance("cloned", sentences[1], codes(9), speaker="spk1", scene="Audio is recorded from a quiet room.",
                  ref_text=sentences[2], ref_codes=codes(6)),
    ]


@pytest.fixture(scope="session")
def overfit(tokenizer) -> Overfit:
    """Train until every teacher-forced audio target (codes and per-codebook EOS) is the argmax."""
    torch.manual_seed(0)
    model = HiggsAudioModel(model_config_for(tokenizer))
    renderer = ChatMLRenderer(tokenizer, K)
    utts = demo_like_utterances()
    collate = renderer.collator(CollatorConfig.from_model_config(model.config))
    batch = collate([renderer(utterance_to_chatml(u)) for u in utts])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(1, 301):
        out = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"], labels=batch["labels"],
                    audio_labels=batch["audio_labels"])
        sums = out.loss_sums
        combine(sums, LossWeights()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 and bool((sums.audio_correct == sums.audio_count).all()) and \
                sums.text_correct == sums.text_count:
            break
    else:
        raise AssertionError("the tiny model did not overfit two samples in 300 steps")
    return Overfit(model.eval(), renderer, tokenizer, utts, step)


@pytest.fixture(scope="session")
def exported(overfit, tmp_path_factory):
    """The overfit model exported as launch/export.py writes it, with a seeded demo DAC: (folder, codec path)."""
    from higgs_ds.codec import CodecConfig, load_codec
    from higgs_ds.data.demo import build_seeded_demo_dac
    from higgs_ds.data.schema import PromptConfig
    from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
    from higgs_ds.run_dir import write_run_extras

    out = tmp_path_factory.mktemp("exported")
    save_checkpoint(overfit.model.state_dict(), overfit.model.config, out, layout="boson")
    overfit.tokenizer.save_pretrained(str(out))
    codec = build_seeded_demo_dac(tmp_path_factory.mktemp("codec") / "codec.pth")
    write_run_extras(out, load_codec(CodecConfig(path=str(codec))).spec, PromptConfig())  # as launch/export.py does
    return out, codec
