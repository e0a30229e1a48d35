"""What a training run leaves on disk, read back for export, generation and evaluation.

    <run_dir>/checkpoints/latest          the tag of the newest complete checkpoint
    <run_dir>/checkpoints/<tag>/          DeepSpeed's ZeRO shards + config.json: {"train": TrainConfig,
                                          "family": model family, "model": its model config (the family's
                                          `config_to_dict`), "audio_spec": AudioSpec}

A tag is complete only when its ``complete.json`` (written last, once every rank's files exist) lists files
that all have their recorded sizes. Every file is read with `safe_load` (weights_only): a checkpoint from
elsewhere cannot run code.

An export or released checkpoint directory holds config.json + safetensors and, when higgs-ds wrote it,
``audio_spec.json`` (what its audio codes mean) and ``prompt_config.json`` (the prompt layout it was
trained with). Nothing here imports the training code.
"""

from __future__ import annotations

import json
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from higgs_ds.audio_spec import AudioSpec, write_spec
from higgs_ds.data.schema import PromptConfig
from higgs_ds.errors import CheckpointError
from higgs_ds.models import ModelFamily, family_of_config_dict, get_family

PROMPT_FILE = "prompt_config.json"
COMPLETE = "complete.json"


def latest_tag(ckpt_dir: str | Path) -> str | None:
    """The tag `latest` names; None when it is missing or is not a one-line tag name (a damaged file)."""
    try:
        tag = (Path(ckpt_dir) / "latest").read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return tag if tag and tag.isprintable() and "/" not in tag and len(tag) < 256 else None


def all_tags(ckpt_dir: str | Path) -> list[str]:
    """Every tag folder, complete or not, oldest first."""
    return sorted(p.name for p in Path(ckpt_dir).glob("step*") if p.is_dir())


def tag_listing(ckpt_dir: str | Path) -> str:
    """'step000002, step000004 (complete: ...)': what a "no such tag" message offers instead."""
    tags, complete = all_tags(ckpt_dir), complete_tags(ckpt_dir)
    if not tags:
        return f"{ckpt_dir} holds no checkpoint tags"
    return f"its tags are {', '.join(tags)} (complete: {', '.join(complete) or 'none'})"


def is_complete(tag_dir: Path) -> bool:
    try:
        files = json.loads((Path(tag_dir) / COMPLETE).read_text())["files"]
        return all((Path(tag_dir) / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def complete_tags(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(ckpt_dir).glob("step*") if p.is_dir() and is_complete(p))


def damaged_file(tag_dir: Path, rank_states: bool = True) -> str | None:
    """Why one of a complete tag's files cannot be loaded although it has its recorded size (overwritten,
    bit rot), or None. Our small per-rank files are read in full; DeepSpeed's large ones are checked as
    archives only. A file that is intact but holds pickled code is refused with a CheckpointError."""
    tag_dir = Path(tag_dir)
    for path in sorted(tag_dir.glob("*.pt")):
        if not rank_states and path.name.startswith("higgs_rank"):
            continue  # only resuming reads them
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    raise zipfile.BadZipFile("no data.pkl record")
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            return f"{path.name} is not a readable torch file ({exc})"
        if not path.name.startswith("higgs_rank"):
            continue
        try:
            safe_load(path, map_location="cpu")
        except Exception as exc:  # torch wraps every unpickling failure the same way
            if "Unsupported global" in str(exc):
                raise CheckpointError(f"{path} holds pickled objects other than tensors (Weights only load "
                                      f"failed: {str(exc).split('Unsupported global', 1)[1][:120].strip(': ')})",
                                      fix="it was not written by higgs-ds; do not load it") from None
            return f"{path.name} cannot be read ({type(exc).__name__})"
    return None


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
    def family(self) -> ModelFamily:
        """The recorded family; runs written before families were recorded name it in `train.model.arch`, or,
        older still, only by their model config."""
        name = self.meta.get("family") or self.meta.get("train", {}).get("model", {}).get("arch")
        if name:
            return get_family(name)
        return family_of_config_dict(self.meta["model"], f"{self.path}/config.json")

    @property
    def model_config(self):
        return self.family.config_from_dict(self.meta["model"], None)

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
            raise CheckpointError("no readable 'latest' file", where=str(path / "latest"),
                                  fix=f"pass --tag; {tag_listing(path)}")
    else:
        if tag is not None and tag != path.name and _is_run_tag(path):
            raise CheckpointError(f"{path} is checkpoint tag {path.name!r}, but tag {tag!r} was requested",
                                  where="--tag", fix="pass the run's checkpoints/ folder, or drop --tag")
        if not _is_run_tag(path):
            if tag is not None:  # an export or a release holds one set of weights: a tag would be ignored
                raise CheckpointError(f"--tag {tag} asks for a training checkpoint, but {path} is not a training run",
                                      where="--tag", fix="drop --tag (an exported model has one set of weights), "
                                                         "or give the run's folder")
            return None
        ckpt_dir, tag = path.parent, path.name
    if not (ckpt_dir / tag).is_dir():
        raise CheckpointError(f"no such tag {tag!r}", where=str(ckpt_dir), fix=tag_listing(ckpt_dir))
    meta_path = ckpt_dir / tag / "config.json"
    if not meta_path.is_file() or not is_complete(ckpt_dir / tag):
        raise CheckpointError(f"tag {tag!r} is incomplete (no valid {COMPLETE}: its save was interrupted, or a "
                              f"file was changed since)", where=str(ckpt_dir / tag), fix=tag_listing(ckpt_dir))
    damage = damaged_file(ckpt_dir / tag, rank_states=False)
    if damage:
        raise CheckpointError(f"checkpoint file {damage}", where=str(ckpt_dir / tag),
                              fix=f"use an earlier tag with --tag; {tag_listing(ckpt_dir)}")
    return RunCheckpoint(ckpt_dir, tag, json.loads(meta_path.read_text()))


def _is_run_tag(path: Path) -> bool:
    """A tag folder of a training run: its config.json records the training config."""
    try:
        return "train" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


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
