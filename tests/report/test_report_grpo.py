"""A GRPO run's report: the rewards chart (mean of each component per logged step, from metrics.jsonl) and
players for the samples the run kept in grpo_samples/ (written with the training loop's own writer, which keeps
the newest few), with their text and rewards; a sample whose audio no reward decoded is listed without one."""

from __future__ import annotations

import json

import torch

from higgs_ds.report import render_report, write_report
from higgs_ds.report.run_files import GRPO_SAMPLES, read_run, reward_keys
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.metrics import MetricsWriter
from higgs_ds.train.preference.objective import KEPT_SAMPLES, FirstSample
from tests.report.test_report import SAMPLE_RATE, _check_links, _parse, _tone

TEXT = "ذهب الولد إلى المدرسة"


def _grpo_run(tmp_path):
    run = tmp_path / "runs" / "grpo"
    run.mkdir(parents=True)
    cfg = TrainConfig(run_dir=str(run), steps=8, log_every=1, objective="grpo", rewards={"stop": 1.0, "dnsmos": 1.0})
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    writer = MetricsWriter(run, {}, wandb_project=None, enabled=True, loggers=())
    for step in range(1, 9):
        writer.write(step, {"loss": 0.05 - 0.02 * step, "reward/total": 0.1 * step, "reward/total_std": 0.05,
                            "reward/stop": 0.1 * step, "reward/stop_std": 0.0, "reward/stop_left_out": 0.0,
                            "reward/dnsmos": 0.5, "reward/dnsmos_std": 0.1, "reward/dnsmos_left_out": 0.0,
                            "grpo/kl": 0.001 * step})
        codes = torch.zeros(4, 10 + step, dtype=torch.long)
        wav = _tone(0.1 * step, 220) if step % 2 == 0 else None  # odd steps: as if no reward decoded audio
        FirstSample(codes, TEXT, 0.1 * step, {"stop": 1.0, "dnsmos": None}).save(run, step, wav, SAMPLE_RATE)
    return run


def test_a_grpo_report_charts_the_rewards_and_plays_the_kept_samples(tmp_path):
    run = _grpo_run(tmp_path)
    kept = sorted(p.name for p in (run / GRPO_SAMPLES).iterdir())
    assert kept == sorted([f"step{s:06d}.json" for s in range(9 - KEPT_SAMPLES, 9)] +
                          [f"step{s:06d}.wav" for s in range(9 - KEPT_SAMPLES, 9) if s % 2 == 0])  # the newest few
    files = read_run(run)
    keys = reward_keys(files.train)  # the means only, the total first: no _std / _left_out series
    assert keys[0] == "reward/total" and sorted(keys) == ["reward/dnsmos", "reward/stop", "reward/total"]
    assert [s.step for s in files.grpo_samples] == list(range(9 - KEPT_SAMPLES, 9))
    assert files.grpo_samples[-1].frames == 18 and files.grpo_samples[-1].scores == {"stop": 1.0, "dnsmos": None}

    html = write_report(run).read_text(encoding="utf-8")
    page = _parse(html)
    # the loss curves and the rewards chart (data URIs, PNG); one player per kept wav (steps 4, 6, 8)
    assert _check_links(page, run) == {"audio": 3, "img": 2}
    assert "<h2>Rewards</h2>" in html and 'alt="reward curves"' in html
    assert html.count("no audio: no reward decodes it") == 2  # steps 5 and 7
    assert [text for d, text in page.directed if d == "auto"].count(TEXT) == KEPT_SAMPLES
    assert "stop 1.000, dnsmos -" in html and "<td class=num>0.800</td>" in html  # step 8's components, reward
    assert html.index("<td class=num>8</td>") < html.index("<td class=num>4</td>")  # newest first


def test_a_run_without_rewards_has_no_rewards_section(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    MetricsWriter(run, {}, wandb_project=None, enabled=True, loggers=()).write(1, {"loss": 2.0})
    assert "<h2>Rewards</h2>" not in render_report(run)
