"""The files of a checkpoint folder, for every family: config.json and safetensors (one file, or shards
with an index), read whole or as names and shapes only, and written sharded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import safe_open
from safetensors.torch import load_file as _load_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def read_state_dict(directory: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` or of the shards listed in `model.safetensors.index.json`.
    meta=True reads only names, shapes and dtypes (tensors on the meta device): what ranks that do not
    fill any weights need, so that a 5.8B checkpoint is read from disk once per node, not per rank."""
    load_file = _load_meta if meta else _load_file
    d = Path(directory)
    index = d / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [f for f in files if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that do not exist: {missing}")
        sd = {}
        for f in files:
            sd.update(load_file(d / f))
        return sd
    single = d / "model.safetensors"
    if single.exists():
        return load_file(single)
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {d}")


def _load_meta(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    with safe_open(path, framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open handles are not iterable)
            sl = f.get_slice(key)
            dtype = getattr(torch, {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(sl.get_dtype(),
                                                                                            "float32"))
            out[key] = torch.empty(sl.get_shape(), dtype=dtype, device="meta")
    return out


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {directory}")
    return json.loads(path.read_text())


def write_config(directory: str | Path, config: dict) -> None:
    (Path(directory) / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_state_dict(state_dict: dict[str, torch.Tensor], directory: str | Path, max_shard_size: int | str = "5GB",
                     dtype: torch.dtype | None = None) -> None:
    """safetensors, sharded with an index when larger than `max_shard_size`; tensors cast to `dtype` if given."""
    sd = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in state_dict.items()}
    save_torch_state_dict(sd, Path(directory), max_shard_size=max_shard_size, metadata={"format": "pt"})


def check_names_and_shapes(directory, layout: str, sd: dict, shapes: dict, missing: list, unexpected: list) -> None:
    """A state dict read from `directory` against the model's parameter shapes: one error naming the folder."""
    if missing or unexpected:
        raise KeyError(f"{directory} ({layout} layout) does not match the model: "
                       f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                       f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for name, t in sd.items():
        if tuple(t.shape) != tuple(shapes[name]):
            raise ValueError(f"{directory}: {name} has shape {tuple(t.shape)}, the model expects {shapes[name]}")


def has_tokenizer(directory: str | Path) -> bool:
    return any((Path(directory) / name).is_file() for name in TOKENIZER_FILES)


def folder_tokenizer(directory: str | Path):
    """The tokenizer saved in a checkpoint folder, or None when there is none."""
    if not has_tokenizer(directory):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
