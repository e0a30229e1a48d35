"""What a training run leaves on disk, read back for export, generation and evaluation.

    <run_dir>/checkpoints/latest          the tag of the newest complete checkpoint
    <run_dir>/checkpoints/<tag>/          DeepSpeed's ZeRO shards + config.json: {"train": TrainConfig,
                                          "model": model config (Boson layout), "audio_spec": AudioSpec}

A tag is complete only when its ``complete.json`` (written last, once every rank's files exist) lists files
that all have their recorded sizes. Every file is read with `safe_load` (weights_only): a checkpoint from
elsewhere cannot run code.

An export or released checkpoint directory holds config.json + safetensors and, when higgs-ds wrote it,
``audio_spec.json`` (what its audio codes mean) and ``prompt_config.json`` (the prompt layout it was
trained with). Nothing here imports the training code.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from higgs_ds.audio_spec import AudioSpec, write_spec
from higgs_ds.data.schema import PromptConfig
from higgs_ds.model.config import HiggsAudioConfig

PROMPT_FILE = "prompt_config.json"
COMPLETE = "complete.json"


def latest_tag(ckpt_dir: str | Path) -> str | None:
    f = Path(ckpt_dir) / "latest"
    return f.read_text().strip() if f.exists() else None


def is_complete(tag_dir: Path) -> bool:
    try:
        files = json.loads((Path(tag_dir) / COMPLETE).read_text())["files"]
        return all((Path(tag_dir) / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def complete_tags(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(ckpt_dir).glob("step*") if p.is_dir() and is_complete(p))


# What DeepSpeed's ZeRO checkpoints pickle besides tensors and containers (deepspeed 0.19): the ZeRO
# stage, the loss scaler (ZeRO-3 optimizer states) and ZeRO-1/2's parameter slice addresses.
def _deepspeed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def safe_load(path, map_location=None, **_ignored):
    """torch.load that unpickles tensors, containers and DeepSpeed's few plain classes, nothing else (the
    extra keyword arguments of callers that pass weights_only=False are ignored)."""
    with torch.serialization.safe_globals(_deepspeed_globals()):
        return _TORCH_LOAD(path, map_location=map_location, weights_only=True)


_TORCH_LOAD = torch.load


@contextmanager
def _weights_only_torch_load():
    """For library code that calls torch.load(weights_only=False) itself (DeepSpeed's zero_to_fp32)."""
    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = _TORCH_LOAD


@dataclass
class RunCheckpoint:
    """One tag of a run's checkpoints and its metadata."""

    ckpt_dir: Path
    tag: str
    meta: dict

    @property
    def path(self) -> Path:
        return self.ckpt_dir / self.tag

    @property
    def model_config(self) -> HiggsAudioConfig:
        return HiggsAudioConfig.from_boson_dict(self.meta["model"])

    @property
    def audio_spec(self) -> AudioSpec:
        if "audio_spec" not in self.meta:
            raise ValueError(f"{self.path}/config.json has no audio_spec: written by an older higgs-ds")
        return AudioSpec.from_dict(self.meta["audio_spec"], f"{self.path}/config.json")

    @property
    def prompt(self) -> PromptConfig:
        data = self.meta.get("train", {}).get("data", {})
        stream = data.get("stream") or data.get("train", {}).get("stream", {})  # runs before 0.2: data.train
        return PromptConfig.from_dict(stream["prompt"]) if "prompt" in stream else PromptConfig()

    @property
    def uses_lora(self) -> bool:
        return bool(self.meta.get("train", {}).get("lora", {}).get("enabled"))

    @property
    def tokenizer_dir(self) -> Path | None:
        tokenizer = self.meta.get("train", {}).get("data", {}).get("tokenizer")
        return Path(tokenizer) if tokenizer and Path(tokenizer).is_dir() else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full fp32 weights, consolidated in memory from the ZeRO shards of every rank."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with _weights_only_torch_load():
            return get_fp32_state_dict_from_zero_checkpoint(str(self.ckpt_dir), tag=self.tag)


def find_run_checkpoint(path: str | Path, tag: str | None = None) -> RunCheckpoint | None:
    """The checkpoint when `path` is a run dir, its checkpoints/ dir or a tag dir (latest tag unless `tag`);
    None when `path` is something else (e.g. an exported checkpoint)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file() or any(path.glob("step*/config.json")):
        ckpt_dir, tag = path, tag or latest_tag(path)
        if tag is None:
            raise FileNotFoundError(f"{path}: no 'latest' file; pass a checkpoint tag")
    else:
        cfg = path / "config.json"
        if not (cfg.is_file() and "train" in json.loads(cfg.read_text())):
            return None
        if tag is not None and tag != path.name:
            raise ValueError(f"{path} is checkpoint tag {path.name!r}, but tag {tag!r} was requested")
        ckpt_dir, tag = path.parent, path.name
    meta_path = ckpt_dir / tag / "config.json"
    if not meta_path.is_file() or not is_complete(ckpt_dir / tag):
        raise FileNotFoundError(f"{ckpt_dir / tag} is not a complete higgs-ds training checkpoint (no valid "
                                f"{COMPLETE}: its save was interrupted); use another tag")
    return RunCheckpoint(ckpt_dir, tag, json.loads(meta_path.read_text()))


def write_run_extras(directory: str | Path, spec: AudioSpec, prompt: PromptConfig) -> None:
    """Store what generation needs beside an exported model: its audio spec and prompt layout."""
    write_spec(directory, spec)
    (Path(directory) / PROMPT_FILE).write_text(json.dumps(prompt.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_prompt(directory: str | Path) -> PromptConfig:
    """The prompt layout stored beside an exported model (the default layout when there is none)."""
    path = Path(directory) / PROMPT_FILE
    if not path.is_file():
        return PromptConfig()
    return PromptConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
