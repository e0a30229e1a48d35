"""`prepare_data preferences` on the tiny exported model: two parts of a manifest of prompts, merged, read
back as pair shards (chosen `codes`, `rejected_codes`, every score), each pair the best and the worst of the
N candidates that its recorded seed regenerates; ties counted, never written; and the rewards' bad inputs
(a bad spec, a missing model, a wrong-length plug-in) as one `error:` line of a command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from higgs_ds.data.shards import iter_tar_samples, list_shards, load_spec, tar_sample_to_utterance
from higgs_ds.inference import GenerationConfig, TTSRequest
from higgs_ds.rewards.candidates import load_sampler
from launch import generate as generate_cli
from launch import prepare_data
from tests.cli.test_bad_inputs import call, one_error
from tests.generate.test_best_of_n import SAMPLING

WEIGHTS = "duration=2,stop=1.5"  # read from the codes: no audio decoded (the tie case below decodes)


def constant(samples):
    return [0.5] * len(samples)


def wrong_length(samples):
    return [0.5] * (len(samples) - 1)


@pytest.fixture(scope="module")
def prompts(overfit, tmp_path_factory):
    """Four prompts (no target audio): plain texts, and one voice-cloned with reference codes."""
    folder = tmp_path_factory.mktemp("prompts")
    cloned = overfit.utterances[1]
    np.save(folder / "ref.npy", cloned.ref_codes)
    rows = [{"id": "p0", "text": overfit.utterances[0].text},
            {"id": "p1", "text": cloned.text, "ref_text": cloned.ref_text, "ref_codes": "ref.npy",
             "scene": cloned.scene},
            {"id": "p2", "text": overfit.utterances[0].text, "speaker": "spk0"},
            {"id": "p3", "text": cloned.text}]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return folder / "prompts.jsonl"


def _pairs(ckpt, manifest, out, *extra) -> list[str]:
    return ["preferences", "--from", ckpt, "--manifest", manifest, "--out", out, "--candidates", "3",
            "--chars-per-second", "12", "--device", "cpu", *SAMPLING, *extra]


def test_pairs_in_two_parts_merge_and_read_back(exported, prompts, tmp_path, capsys):
    ckpt, _ = exported
    for i in range(2):
        assert prepare_data.main([str(a) for a in _pairs(ckpt, prompts, tmp_path / f"part{i}", "--rewards", WEIGHTS,
                                                         "--part", f"{i}/2", "--seed", "3")]) == 0
    assert prepare_data.main(["merge", "--out", str(tmp_path / "pairs"), str(tmp_path / "part0"),
                              str(tmp_path / "part1")]) == 0
    merged = tmp_path / "pairs"
    index = json.loads((merged / "shards.json").read_text())
    spec = load_spec(merged)
    pairs = [tar_sample_to_utterance(s, spec) for shard in list_shards(merged) for s in iter_tar_samples(shard)]
    ties = [json.loads(line) for line in (merged / "rejects.jsonl").read_text().splitlines()]
    assert sorted([u.id for u in pairs] + [t["id"] for t in ties]) == ["p0", "p1", "p2", "p3"]
    assert all(t["kind"] == "tied_candidates" for t in ties) and index["num_samples"] == len(pairs) >= 2
    assert index["pairs"] is True  # what preflight reads before objective=dpo trains on the split
    weights = {"duration": 2.0, "stop": 1.5}
    lines = {"p0": 1, "p1": 2, "p2": 3, "p3": 4}
    for u in pairs:
        meta = u.meta
        assert u.rejected_codes is not None and meta["seed"] == 3 + lines[u.id] and meta["candidates"] == 3
        for side in ("chosen", "rejected"):  # each reward is the weighted mean of its scores
            scores = meta[f"{side}_scores"]
            assert set(scores) == set(weights)
            assert meta[f"{side}_reward"] == pytest.approx(sum(weights[k] * v for k, v in scores.items()) / 3.5)
        assert meta["chosen_reward"] > meta["rejected_reward"]
        every = meta["candidate_rewards"]  # best and worst of the non-empty candidates
        assert len(every) == 3 and every[meta["chosen_index"]] == meta["chosen_reward"]
        assert every[meta["rejected_index"]] == meta["rejected_reward"]
    # the recorded seed regenerates a prompt's candidates: chosen and rejected are two of them
    u = next((u for u in pairs if u.ref_codes is not None), pairs[0])  # the cloned prompt when it gave a pair
    request = TTSRequest(u.text, scene=u.scene, ref_text=u.ref_text, ref_codes=u.ref_codes, id=u.id)
    again = load_sampler(ckpt).sample([request] * 3, GenerationConfig(temperature=2.0, top_k=0, top_p=1.0,
                                                                      max_new_frames=12, seed=u.meta["seed"]))
    assert np.array_equal(again.codes[u.meta["chosen_index"]].numpy(), u.codes)
    assert np.array_equal(again.codes[u.meta["rejected_index"]].numpy(), u.rejected_codes)
    usable = [i for i, c in enumerate(again.codes) if c.shape[1] > 0]  # the shards hold no empty codes
    every = u.meta["candidate_rewards"]
    assert u.meta["chosen_index"] == max(usable, key=lambda i: (every[i], -i))
    assert u.meta["rejected_index"] == min(usable, key=lambda i: (every[i], i))
    cloned = next((u for u in pairs if u.id == "p1"), None)
    if cloned is not None:  # the reference voice travels with the pair, as in a training shard
        assert np.array_equal(cloned.ref_codes, np.load(prompts.parent / "ref.npy")) and cloned.ref_text


def test_candidates_that_tie_give_no_pair_and_are_counted(exported, prompts, tmp_path, capsys):
    ckpt, _ = exported
    code = prepare_data.main([str(a) for a in _pairs(ckpt, prompts, tmp_path / "tied", "--part", "1/4",
                                                     "--rewards", f"{__name__}:constant")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["prompts"] == 1 and summary["pairs"] == 0
    assert summary["reject_kinds"] == {"tied_candidates": 1}
    (tie,) = [json.loads(line) for line in (tmp_path / "tied" / "rejects.jsonl").read_text().splitlines()]
    assert tie["id"] == "p1" and "tie" in tie["reason"]


def test_reward_problems_are_one_error_line(exported, prompts, tmp_path, capsys):
    ckpt, _ = exported
    base = [ckpt, "--text", "مرحبا", "--out", tmp_path / "g.wav", "--candidates", "2", *SAMPLING]
    cases = [
        (generate_cli.main, [*base, "--select", "cer=-1"], ["--select"]),  # refused while the flags are read
        (generate_cli.main, [*base, "--greedy", "--select", "stop"], ["needs sampling"]),
        (generate_cli.main, base, ["--candidates needs --select"]),
        (generate_cli.main, [*base, "--select", "nope"], ["nope", "neither a built-in"]),
        (generate_cli.main, [*base, "--select", "cer", "--whisper", tmp_path], ["not a local Whisper folder"]),
        (generate_cli.main, [*base, "--select", "duration"], ["--chars-per-second"]),
        (generate_cli.main, [*base, "--select", f"{__name__}:wrong_length"], ["returned 1 values for 2 samples"]),
        (prepare_data.main, [*_pairs(ckpt, prompts, tmp_path / "p", "--rewards", "cer")], ["Whisper folder"]),
        (prepare_data.main, [*_pairs(ckpt, prompts, tmp_path / "p", "--rewards", "no_such_mod.x:f")],
         ["not importable"]),
    ]
    for main, argv, named in cases:
        one_error(*call(main, argv, capsys), *named)
    assert not (tmp_path / "g.wav").exists() and not (tmp_path / "p").exists()


@pytest.mark.integration
def test_the_pairs_command_line_process_refuses_a_missing_plugin_in_one_line(exported, prompts, tmp_path):
    from tests.harness import python

    proc = python("launch/prepare_data.py", *map(str, _pairs(exported[0], prompts, tmp_path / "p", "--rewards",
                                                             "stop=1,no_such_mod.rewards:score=2")))
    one_error(proc.returncode, proc.stderr, "no_such_mod.rewards:score", "not importable")
    assert not (tmp_path / "p").exists()
