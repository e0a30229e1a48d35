"""objective=dpo and objective=grpo through launch/train.py on 2 CPU ranks with ZeRO-3 (Higgs Audio v2): each
trains, saves at step 2, and a second run resumed from that checkpoint reproduces step 3 exactly (GRPO's
samples are seeded per rank and step, so the resumed run draws the same ones)."""

from __future__ import annotations

import shutil

import pytest

from higgs_ds.train.metrics import read_metrics
from tests.harness import checked, train
from tests.train.preference_data import write_pair_split

pytestmark = pytest.mark.integration

STEPS = ("steps=3", "save_every=2", "keep_last=2")
OBJECTIVES = {
    "dpo": ("objective=dpo", "dpo.beta=0.5"),
    "grpo": ("objective=grpo", 'rewards={"tests.train.toy_rewards:low_codes": 1.0}', "grpo.max_new_frames=16",
             "grpo.group_size=3", "grpo.epochs=2"),
}
LOGGED = {"dpo": ("loss", "dpo/accuracy", "dpo/reward_margin", "dpo/chosen_logp"),
          "grpo": ("loss", "reward/total", "grpo/kl", "grpo/clip_fraction", "grpo/frames")}


def _records(run) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl")}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_a_preference_run_trains_and_resumes_exactly(objective, tmp_path, random_data):
    data = dict(random_data)
    if objective == "dpo":
        data["train"] = write_pair_split(tmp_path / "pairs")
    first = tmp_path / "first"
    checked(train(first, data, *STEPS, *OBJECTIVES[objective]))
    straight = _records(first)
    assert sorted(straight) == [1, 2, 3]
    assert all(k in straight[3] for k in LOGGED[objective]), sorted(straight[3])

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(first / "checkpoints" / "step000002", resumed / "checkpoints" / "step000002")
    (resumed / "checkpoints" / "latest").write_text("step000002")
    checked(train(resumed, data, *STEPS, *OBJECTIVES[objective], "resume=auto"))
    again = _records(resumed)
    assert sorted(again) == [3]
    for step in (3,):
        assert {k: again[step][k] for k in LOGGED[objective]} == {k: straight[step][k] for k in LOGGED[objective]}
    if objective == "grpo":
        assert straight[3]["grpo/kl"] > 0  # the policy has moved away from the reference
        # 2 epochs: the second pass has a ratio the clip can act on (with 1, the logged fraction is 0)
        assert max(r["grpo/clip_fraction"] for r in straight.values()) > 0
