"""The TensorBoard sink: what MetricsWriter writes comes back through TensorBoard's own event reader
(scalars, audio at the codec's rate, images, the prediction text with its Arabic intact), and only rank 0
writes anything."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import AUDIO, IMAGES, SCALARS, TENSORS, EventAccumulator
from tensorboard.plugin_util import markdown_to_safe_html

from higgs_ds.inference.audio import write_spectrogram
from higgs_ds.train.config import TrainConfig, load_config
from higgs_ds.train.metrics import MetricsWriter
from higgs_ds.train.tensorboard_log import PDI, RLI, markdown_text, prediction_markdown

ARABIC = "ذهب الولد إلى المدرسة"
SAMPLE_RATE = 16000


def _report() -> dict:
    return {"prompt": f"<|audio_out_bos|> {ARABIC}", "text_pred": ARABIC, "text_target": "ذهبت البنت",
            "text_tokens": [["ذهب", "ذهب"], ["الولد", "البنت"], ["<|eot_id|>", "<|eot_id|>"]],
            "text_masked": 12, "text_unmasked": 30, "audio_cb0_pred": [1, 2], "audio_cb0_target": [1, 3],
            "audio_cb0_diff": [".", "x"], "audio_acc_per_codebook": [0.5, 0.25], "audio_masked": 4,
            "audio_unmasked": 60}


def _write_everything(writer: MetricsWriter, run_dir) -> np.ndarray:
    wav = (0.5 * np.sin(np.arange(SAMPLE_RATE // 2) * 2 * np.pi * 220 / SAMPLE_RATE)).astype(np.float32)
    png = write_spectrogram(run_dir / "spec.png", torch.from_numpy(wav), SAMPLE_RATE, title="step 20")
    for step, loss in ((10, 2.5), (20, 1.5)):
        writer.write(step, {"loss": loss, "loss/text": loss + 1, "loss/audio_cb0": loss / 2, "nonfinite_skipped": 0})
    writer.write(20, {"loss": 1.75}, kind="eval")
    writer.write(20, {"gen/frame_acc": 0.25}, kind="audio_eval")
    writer.write_media(20, audio={"audio_eval/p0/audio": (wav, SAMPLE_RATE)}, images={"audio_eval/p0/spectrogram": png})
    writer.write_predictions(20, _report())
    writer.close()
    return wav


def _events(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, AUDIO: 0, IMAGES: 0, TENSORS: 0})
    events.Reload()
    return events


def test_events_read_back_with_tensorboards_reader(tmp_path):
    writer = MetricsWriter(tmp_path, {}, wandb_project=None, enabled=True, loggers=["tensorboard"])
    wav = _write_everything(writer, tmp_path)
    events = _events(tmp_path / "tensorboard")

    assert [(s.step, s.value) for s in events.Scalars("loss")] == [(10, 2.5), (20, 1.5)]
    assert [(s.step, s.value) for s in events.Scalars("loss/audio_cb0")] == [(10, 1.25), (20, 0.75)]
    assert [(s.step, s.value) for s in events.Scalars("eval/loss")] == [(20, 1.75)]
    assert [(s.step, s.value) for s in events.Scalars("audio_eval/gen/frame_acc")] == [(20, 0.25)]

    (audio,) = events.Audio("audio_eval/p0/audio")
    assert (audio.step, audio.sample_rate, audio.length_frames) == (20, SAMPLE_RATE, len(wav))
    decoded, rate = soundfile.read(io.BytesIO(audio.encoded_audio_string), dtype="float32")
    assert rate == SAMPLE_RATE and np.allclose(decoded, wav, atol=1e-4)

    (image,) = events.Images("audio_eval/p0/spectrogram")
    with Image.open(tmp_path / "spec.png") as png:
        assert (image.width, image.height) == png.size
    assert image.encoded_image_string.startswith(b"\x89PNG")

    (text,) = events.Tensors("predictions/text_summary")
    markdown = text.tensor_proto.string_val[0].decode("utf-8")
    assert f"{RLI}{ARABIC}{PDI}" in markdown
    rendered = markdown_to_safe_html(markdown)  # what TensorBoard's text tab shows
    assert ARABIC in rendered and "&lt;|eot_id|&gt;" in rendered and "<table>" in rendered


def test_only_rank_0_writes_events(tmp_path):
    writer = MetricsWriter(tmp_path, {}, wandb_project=None, enabled=False, loggers=["tensorboard"])
    _write_everything(writer, tmp_path)
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_markdown_keeps_special_tokens_visible_and_isolates_rtl_text():
    assert markdown_text("<|audio_bos|> a*b_c") == "&lt;\\|audio\\_bos\\|&gt; a\\*b\\_c"  # table-safe too
    assert markdown_text(ARABIC) == f"{RLI}{ARABIC}{PDI}"
    assert markdown_text("<|x|> " + ARABIC).startswith("&lt;")  # first strong letter is Latin: left to right
    assert markdown_text("12 " + ARABIC).startswith(RLI)  # digits are not strong: Arabic decides
    assert "| الولد | البنت | x |" in prediction_markdown(_report()).replace(RLI, "").replace(PDI, "")


def test_loggers_config_is_checked_and_defaults_to_tensorboard():
    assert TrainConfig().loggers == ["wandb", "tensorboard"]  # tensorboard is installed here
    assert load_config(None, ["loggers=[tensorboard]"]).loggers == ["tensorboard"]
    with pytest.raises(ValueError, match="loggers"):
        load_config(None, ["loggers=[wandb, mlflow]"])
