"""runs/<run>/report.html, rendered from a run directory written with the real writers: the page parses,
every linked file exists (also after the run folder is copied elsewhere), every <audio> is a wav that
decodes, every data URI is a PNG, the Arabic survives, and a run in progress renders too."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import soundfile
import torch

from higgs_ds.errors import CheckpointError
from higgs_ds.inference.audio import write_codes, write_spectrogram, write_wav
from higgs_ds.report import read_jsonl, render_report, write_report
from higgs_ds.train.config import TrainConfig
from higgs_ds.train.metrics import MetricsWriter
from launch import report as report_cli

SAMPLE_RATE = 16000
PROMPTS = {"held": {"p0": "ذهب الولد إلى المدرسة", "p1": "قرأت البنت الكتاب"}, "train": {"t0": "السماء صافية اليوم"}}
PREDICTED = "ذهب الولد إلى البيت"


class Page(HTMLParser):
    """Tags, their attributes and the text inside elements that have a `dir` attribute."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.open: list[str] = []
        self.directed: list[tuple[str, str]] = []  # (dir, text)
        self._dirs: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag not in ("img", "meta", "br", "source"):
            self.open.append(tag)
            self._dirs.append(attrs.get("dir"))

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()
        self._dirs.pop()

    def handle_data(self, data):
        directions = [d for d in self._dirs if d]
        if directions and data.strip():
            self.directed.append((directions[-1], data))


def _parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.open == [], f"unclosed: {page.open}"
    return page


def _tone(seconds: float, hz: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.3 * torch.sin(2 * torch.pi * hz * t)


def _write_eval_set(root: Path, prompts: dict[str, str], steps: list[int]) -> None:
    """What the listening eval leaves: per step wav + spectrogram + codes, the references, prompts.json."""
    for i, pid in enumerate(prompts):
        reference = torch.arange(4 * 20).view(4, 20) % 7
        write_wav(root / "reference" / f"{pid}.wav", _tone(0.5, 200 + 50 * i), SAMPLE_RATE)
        write_codes(root / "reference" / f"{pid}.npy", reference)
        write_spectrogram(root / "reference" / f"{pid}.png", _tone(0.5, 200 + 50 * i), SAMPLE_RATE)
        for step in steps:
            generated = reference[:, : 10 + step // 10].clone()  # longer and closer to the target each eval
            write_wav(root / f"step{step:06d}" / f"{pid}.wav", _tone(0.02 * step, 300), SAMPLE_RATE)
            write_codes(root / f"step{step:06d}" / f"{pid}.npy", generated)
            write_spectrogram(root / f"step{step:06d}" / f"{pid}.png", _tone(0.02 * step, 300), SAMPLE_RATE)
    described = {pid: {"text": text, "speaker": f"spk{i}", "ref_text": None}
                 for i, (pid, text) in enumerate(prompts.items())}
    (root / "prompts.json").write_text(json.dumps(described, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "runs" / "arabic"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(TrainConfig(run_dir=str(run), steps=100).to_dict()))
    writer = MetricsWriter(run, {}, wandb_project=None, enabled=True, loggers=())
    for step in range(10, 101, 10):
        loss = 5.0 / step
        writer.write(step, {"loss": loss, "loss/text": 2 * loss, "loss/audio": loss,
                            **{f"loss/audio_cb{k}": loss * (k + 1) for k in range(4)}})
    for step in (50, 100):
        writer.write(step, {"loss": 0.1, "loss/text": 0.2, "loss/audio": 0.05}, kind="eval")
        writer.write(step, {"gen/frame_acc": step / 200, "gen/length_ratio": 0.5 + step / 200, "gen/stop_rate": 1.0,
                            "tf/acc_audio": 0.9}, kind="audio_eval")
        writer.write(step, {"train/gen/frame_acc": step / 100, "train/gen/length_ratio": 1.0}, kind="audio_eval")
    _write_eval_set(run / "audio_eval", PROMPTS["held"], [50, 100])
    _write_eval_set(run / "audio_eval" / "train", PROMPTS["train"], [50, 100])
    report = {"prompt": PROMPTS["held"]["p0"], "text_pred": PREDICTED, "text_target": PROMPTS["held"]["p0"],
              "text_tokens": [["ذهب", "ذهب"], ["<|eot_id|>", "<|eot_id|>"]], "text_masked": 3, "text_unmasked": 9,
              "audio_cb0_diff": [".", "x"], "audio_acc_per_codebook": [0.5, 0.25, 0.0, 1.0], "audio_masked": 2,
              "audio_unmasked": 8}
    with (run / "predictions.jsonl").open("a") as f:
        for step in (50, 100):
            f.write(json.dumps({"step": step, **report}, ensure_ascii=False) + "\n")
    return run


def _check_links(page: Page, run: Path) -> dict[str, int]:
    """Every src resolves (relative to the run dir) or decodes (data URI); returns counts per tag."""
    counts = {"audio": 0, "img": 0}
    for tag, attrs in page.tags:
        if tag not in counts:
            continue
        src = attrs["src"]
        counts[tag] += 1
        if src.startswith("data:"):
            assert tag == "img" and src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
            continue
        assert not Path(src).is_absolute() and ".." not in Path(unquote(src)).parts, src
        path = run / unquote(src)
        assert path.is_file(), src
        if tag == "audio":
            wav, rate = soundfile.read(path)
            assert rate == SAMPLE_RATE and len(wav) > 0
        else:
            assert path.read_bytes().startswith(b"\x89PNG")
    return counts


def test_report_links_plays_and_keeps_the_arabic(run_dir, tmp_path):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    page = _parse(html)
    counts = _check_links(page, run_dir)
    # 3 prompts x (2 steps + the reference); one curves PNG (data URI) + one spectrogram per player
    assert counts == {"audio": 9, "img": 10}

    rtl = [text for direction, text in page.directed if direction == "rtl"]
    for text in [*PROMPTS["held"].values(), *PROMPTS["train"].values()]:
        assert text in rtl
    auto = [text for direction, text in page.directed if direction == "auto"]
    assert PREDICTED in auto and "<|eot_id|>" in auto  # special tokens shown, not swallowed as tags

    # the listening table: first vs last eval, both prompt sets
    assert "step 50</th><th>step 100" in html and "training prompts (memorised)" in html
    assert "0.250</td><td class=num>0.500" in html  # held-out frame accuracy 50 -> 100
    # per prompt and step, the prompt's own metrics from its codes: 15 of 20 frames at step 50
    assert "length ratio 0.75<br>frame acc 0.750" in html and "length ratio 1.00<br>frame acc 1.000" in html

    copied = shutil.copytree(run_dir, tmp_path / "elsewhere" / "copy")  # the folder works wherever it goes
    _check_links(_parse((copied / "report.html").read_text(encoding="utf-8")), copied)


def test_a_run_in_progress_renders(run_dir):
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 110, "kind": "tra')  # being written right now
    (run_dir / "audio_eval" / "step000150").mkdir()  # an eval that has not written its files yet
    (run_dir / "audio_eval" / "train" / "step000100" / "t0.npy").unlink()
    (run_dir / "predictions.jsonl").unlink()
    shutil.rmtree(run_dir / "audio_eval" / "reference")
    page = _parse(render_report(run_dir))
    _check_links(page, run_dir)
    html = render_report(run_dir)
    assert "not written yet" in html and "codes not written yet" in html and "no prediction report yet" in html
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 10 + 2 + 4


def test_an_empty_run_renders_and_a_bad_line_is_named(tmp_path):
    (tmp_path / "fresh").mkdir()
    assert "no metrics yet" in render_report(tmp_path / "fresh")
    (tmp_path / "fresh" / "metrics.jsonl").write_text('{"step": 1, "kind": "train"}\nnot json\n{"step": 2}\n')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2"):
        render_report(tmp_path / "fresh")


def test_the_command_line_prints_the_path_and_reports_a_missing_run(run_dir, tmp_path, capsys):
    assert report_cli.main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    assert report_cli.main([str(tmp_path / "nope")]) == 2
    assert "error: no such run directory" in capsys.readouterr().err
