"""Two gloo ranks generating prompts of different lengths take the same number of model forwards
(what ZeRO-3 needs: every rank calls the modules in lockstep), and each still gets its own codes."""

import json
import os

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from higgs_ds.inference import GenerationConfig, TTSRequest, generate
from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
from higgs_ds.models.higgs_v2.prompt import ChatMLRenderer
from higgs_ds.models.pretrained import from_pretrained
from tests.harness import free_port


def _worker(rank: int, world: int, ckpt: str, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from transformers import AutoTokenizer

        model = from_pretrained(ckpt).eval()
        renderer = ChatMLRenderer(AutoTokenizer.from_pretrained(ckpt), model.config.audio_num_codebooks)
        with open(os.path.join(ckpt, "requests.json")) as f:
            spec = json.load(f)[rank]
        request = TTSRequest(spec["text"], scene=spec["scene"], ref_text=spec["ref_text"],
                             ref_codes=None if spec["ref_codes"] is None else np.array(spec["ref_codes"]))
        calls = []
        model.audio_decoder_proj.audio_lm_head.register_forward_hook(lambda *a: calls.append(1))
        result = generate(model, renderer, [request], GenerationConfig(temperature=0, ras_window=0, max_new_frames=60))
        with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"steps": result.steps, "head_calls": len(calls), "codes": result.codes[0].tolist(),
                       "finished": result.finished}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.integration  # two torch.multiprocessing ranks over gloo
def test_ranks_with_different_lengths_stay_in_lockstep(overfit, tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(overfit.model.state_dict(), overfit.model.config, ckpt, layout="boson")
    overfit.tokenizer.save_pretrained(str(ckpt))
    specs = [{"text": u.text, "scene": u.scene, "ref_text": u.ref_text,
              "ref_codes": None if u.ref_codes is None else u.ref_codes.tolist()} for u in overfit.utterances]
    (ckpt / "requests.json").write_text(json.dumps(specs))
    port = free_port()  # a fixed range could meet a run of the other tier
    mp.spawn(_worker, args=(2, str(ckpt), port, str(tmp_path)), nprocs=2, join=True)

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    longest = max(u.codes.shape[1] for u in overfit.utterances) + 8
    assert [r["steps"] for r in results] == [longest, longest]
    assert [r["head_calls"] for r in results] == [longest, longest]
    for r, utt in zip(results, overfit.utterances, strict=True):
        assert r["finished"] == [True] and np.array_equal(np.array(r["codes"]), utt.codes)
