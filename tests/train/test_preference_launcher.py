"""objective=dpo and objective=grpo through launch/train.py on 2 CPU ranks with ZeRO-3 (Higgs Audio v2), one
run per reference policy: DPO under LoRA (the reference is the policy with its adapters disabled), GRPO under
full fine-tuning (a frozen ZeRO-3 copy of the initial weights). Each trains, saves at step 2, and a second run
resumed from that checkpoint reproduces step 3 exactly (GRPO's samples are seeded per rank and step, so the
resumed run draws the same ones; DPO's adapter dropout masks come back with the RNG state)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from higgs_ds.run_dir import find_run_checkpoint
from higgs_ds.train.lora import is_adapter_param
from higgs_ds.train.metrics import read_metrics
from tests.harness import checked, train
from tests.train.preference_data import write_pair_split
from tests.train.test_lora import base

__all__ = ["base"]  # the fixture the DPO case fine-tunes with LoRA
pytestmark = pytest.mark.integration

TOY = "tests.train.toy_rewards:low_codes"
STEPS = ("steps=3", "save_every=2", "keep_last=2")
OBJECTIVES = {
    "dpo": ("objective=dpo", "dpo.beta=0.5", "lora.enabled=true", "lora.rank=4", "lora.alpha=8", "lora.dropout=0.1",
            "lora.targets=[attention,text_mlp,audio_mlp]"),
    "grpo": ("objective=grpo", f'rewards={{"{TOY}": 1.0}}', "grpo.max_new_frames=16",
             "grpo.group_size=3", "grpo.epochs=2"),
}
LOGGED = {"dpo": ("loss", "dpo/accuracy", "dpo/reward_margin", "dpo/chosen_logp"),
          "grpo": ("loss", "reward/total", "grpo/kl", "grpo/clip_fraction", "grpo/frames")}


def _records(run) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl")}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_a_preference_run_trains_and_resumes_exactly(objective, tmp_path, random_data, request):
    data = dict(random_data)
    settings = OBJECTIVES[objective]
    if objective == "dpo":
        data["train"] = write_pair_split(tmp_path / "pairs")
        settings = (*settings, f"model.init={request.getfixturevalue('base')}")
    first = tmp_path / "first"
    checked(train(first, data, *STEPS, *settings))
    straight = _records(first)
    assert sorted(straight) == [1, 2, 3]
    assert all(k in straight[3] for k in LOGGED[objective]), sorted(straight[3])

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(first / "checkpoints" / "step000002", resumed / "checkpoints" / "step000002")
    (resumed / "checkpoints" / "latest").write_text("step000002")
    checked(train(resumed, data, *STEPS, *settings, "resume=auto"))
    again = _records(resumed)
    assert sorted(again) == [3]
    for step in (3,):
        assert {k: again[step][k] for k in LOGGED[objective]} == {k: straight[step][k] for k in LOGGED[objective]}
    if objective == "dpo":
        # LoRA's B starts at zero: on the first step the policy is its own reference (adapters disabled) exactly,
        # so every implicit reward is 0 and the loss is ln 2; then the adapters move it
        assert straight[1]["dpo/reward_margin"] == 0.0 and straight[1]["loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert straight[3]["dpo/reward_margin"] != 0.0
        saved = find_run_checkpoint(first, "step000002").state_dict()
        assert any(is_adapter_param(n) for n in saved)  # the run trained adapters, not the full model
    if objective == "grpo":
        assert straight[3]["grpo/kl"] > 0  # the policy has moved away from the reference
        # each log line kept its first sample (no wav: the toy reward reads codes), the same after resume;
        # the run's report charts the rewards and lists the samples
        kept = [json.loads((run / "grpo_samples" / "step000003.json").read_text()) for run in (first, resumed)]
        assert kept[0] == kept[1] and kept[0]["text"] and list(kept[0]["scores"]) == [TOY]
        assert sorted(p.name for p in (first / "grpo_samples").iterdir()) == [f"step00000{s}.json" for s in (1, 2, 3)]
        assert 'alt="reward curves"' in (first / "report.html").read_text(encoding="utf-8")
        # 2 epochs: the second pass has a ratio the clip can act on (with 1, the logged fraction is 0)
        assert max(r["grpo/clip_fraction"] for r in straight.values()) > 0
