"""TensorBoard sink of the training metrics (rank 0 only, like every sink of `MetricsWriter`): the scalars
of metrics.jsonl, the listening eval's wavs and spectrograms, the loss curve and the prediction report,
under ``<run_dir>/tensorboard/``. Local, no account: ``tensorboard --logdir runs/``.

TensorBoard renders text as Markdown and strips raw HTML (a `dir` attribute does not survive), so
right-to-left text is wrapped in the Unicode isolates RLI ... PDI: the browser lays it out as an Arabic
paragraph inside a left-to-right page without moving the punctuation around it.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import numpy as np

RLI, PDI = "\u2067", "\u2069"  # right-to-left isolate and its pop
_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|"})


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def is_rtl(text: str) -> bool:
    """True when the first strong character is Arabic / Hebrew (how browsers pick a paragraph's direction)."""
    for ch in text:
        if "\u0590" <= ch <= "\u08ff" or "\ufb1d" <= ch <= "\ufefc":
            return True
        if ch.isalpha():
            return False
    return False


def markdown_text(text: str) -> str:
    """`text` as literal Markdown: HTML and Markdown syntax escaped (special tokens such as <|audio_bos|>
    stay visible), right-to-left text isolated."""
    escaped = html.escape(text, quote=False).translate(_MARKDOWN_SPECIAL)
    return f"{RLI}{escaped}{PDI}" if is_rtl(text) else escaped


def prediction_markdown(report: dict) -> str:
    """The prediction report (see `higgs_ds.train.predictions`) as TensorBoard Markdown: the sample text,
    predicted vs target text, a table of token pairs, codebook-0 agreement and per-codebook accuracy."""
    tokens = "\n".join(f"| {markdown_text(p)} | {markdown_text(t)} | {'' if p == t else 'x'} |"
                       for p, t in report["text_tokens"])
    accuracy = ", ".join(f"cb{k} {a:.3f}" for k, a in enumerate(report["audio_acc_per_codebook"]))
    return "\n\n".join([
        f"**sample text:** {markdown_text(' '.join(report['prompt'].split()))}",
        f"**text predicted:** {markdown_text(report['text_pred'])}",
        f"**text target:** {markdown_text(report['text_target'])}",
        "position t predicts t+1:\n\n| predicted | target | miss |\n|---|---|---|\n" + tokens,
        f"**text labels:** {report['text_unmasked']} trained, {report['text_masked']} masked",
        f"**audio cb0 diff** (x = mismatch): `{''.join(report['audio_cb0_diff'])}`",
        f"**audio labels:** {report['audio_unmasked']} trained, {report['audio_masked']} masked",
        f"**audio accuracy per codebook:** {accuracy}",
    ])


class TensorBoardLogger:
    """The same calls as the wandb sink of `MetricsWriter`: scalars, media (audio + images) and the
    prediction report, each at a step."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalars(self, step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float):  # bools count; strings and lists are not plottable
                self.writer.add_scalar(key, float(value), step)

    def media(self, step: int, audio: dict[str, tuple[np.ndarray, int]], images: dict[str, Path]) -> None:
        for tag, (wav, sample_rate) in audio.items():
            samples = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
            self.writer.add_audio(tag, samples.reshape(1, -1), step, sample_rate=sample_rate)
        for tag, png in images.items():
            from PIL import Image

            with Image.open(png) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def predictions(self, step: int, report: dict) -> None:
        self.writer.add_text("predictions", prediction_markdown(report), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
