"""Higgs TTS 3 end to end on tiny stand-ins: a folder in the released layout -> a 2-rank ZeRO-3 run through
`deepspeed launch/train.py` with the TTS 3 prompt -> export back in the released layout (codec tensors byte
for byte, and tensor for tensor the run's checkpoint rounded to bf16) -> generation from the export, with
room for the TTS 3 stopping rule, equal to generation from the run's own checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from higgs_ds.audio_spec import HIGGS_AUDIO_TOKENIZER
from higgs_ds.data.shards import INDEX_NAME
from higgs_ds.export import export
from higgs_ds.inference import GenerationConfig, TTSRequest, generate, load_model
from higgs_ds.models import get_family
from higgs_ds.models.higgs_tts3.prompt import Tts3Renderer
from tests.data.synthetic import write_synthetic_split
from tests.harness import checked, losses, train
from tests.tts3_utils import write_tiny_tts3_folder

pytestmark = pytest.mark.integration


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return out


def _higgs_split(folder: Path, seed: int) -> Path:
    """Random codes labelled as the Higgs Audio v2 tokenizer's (the codes TTS 3 was trained on)."""
    write_synthetic_split(folder, num_shards=2, per_shard=4, seed=seed)
    index = json.loads((folder / INDEX_NAME).read_text())
    index["audio_spec"] = HIGGS_AUDIO_TOKENIZER.to_dict()
    (folder / INDEX_NAME).write_text(json.dumps(index))
    return folder


def test_tts3_folder_trains_exports_and_generates(tmp_path):
    init = write_tiny_tts3_folder(tmp_path / "tts3-release")
    data = {"train": _higgs_split(tmp_path / "train", 0), "eval": None, "tokenizer": init}
    run = tmp_path / "run"
    checked(train(run, data, "model.arch=higgs_tts3", f"model.init={init}", "steps=3", "save_every=3",
                  "optim.lr=1e-3"))
    steps = losses(run)
    assert sorted(steps) == [1, 2, 3] and all(torch.isfinite(torch.tensor(v)).all() for v in steps.values())

    out = export(run / "checkpoints", tmp_path / "export")  # the family's own layout: the released one
    before, after = _tensors(init), _tensors(out)
    assert set(before) == set(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and after[name].shape == tensor.shape, name
        if ".modality_embeddings.0.model." in name:  # the bundled codec: unchanged, byte for byte
            assert torch.equal(after[name].view(torch.uint8), tensor.view(torch.uint8)), name
    table = "tied.embedding.modality_embeddings.0.embedding.weight"
    assert not torch.equal(after[table], before[table])  # trained
    assert json.loads((out / "config.json").read_text())["model_type"] == "higgs_multimodal_qwen3"

    loaded = load_model(out)
    assert loaded.family is get_family("higgs_tts3")
    renderer = loaded.family.make_renderer(AutoTokenizer.from_pretrained(str(out)), 8)
    assert isinstance(renderer, Tts3Renderer)
    greedy = GenerationConfig(temperature=0.0, ras_window=0, max_new_frames=3 * 8)  # room for 2K-1 rows and a stop
    result = generate(loaded.model, renderer, [TTSRequest("hello world")], greedy)
    rows = result.delayed[0][:, 1:]  # max_new_frames rows, or fewer when codebook 0 ended the segment
    assert rows.shape[0] == 8 and 8 <= rows.shape[1] <= 24 and (result.finished[0] or rows.shape[1] == 24)
    assert rows[1:, 0].eq(1024).all() and result.codes[0].shape == (8, rows.shape[1] - 7)  # BOC above row 0

    # the export is the run: the run's last checkpoint, rounded to the release's bf16, tensor for tensor, and it
    # generates the same rows
    trained = load_model(run)
    with torch.no_grad():
        for p in trained.model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    exported = loaded.model.state_dict()
    assert all(torch.equal(exported[name], t) for name, t in trained.model.state_dict().items())
    again = generate(trained.model, renderer, [TTSRequest("hello world")], greedy)
    assert torch.equal(again.delayed[0], result.delayed[0]) and again.finished == result.finished
