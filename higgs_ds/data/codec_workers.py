"""Which device each codec worker of a shard build encodes on.

    worker_devices("cuda", None)          # 4 visible GPUs -> ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    worker_devices("cuda:0,cuda:2", None) # -> ["cuda:0", "cuda:2"]
    worker_devices("cuda", 8)             # 4 GPUs, 8 workers -> round-robin, two workers per GPU
    worker_devices("cpu", 3)              # -> ["cpu", "cpu", "cpu"]

Without ``--workers`` a GPU build starts one worker per device and a CPU build one worker. More
workers than devices share them round-robin (worker i on device i mod G): useful when decoding audio
files, not the codec, is the bottleneck. Fewer workers use the first devices of the list.
"""

from __future__ import annotations

import torch

from higgs_ds.device import device_problem
from higgs_ds.errors import ConfigError

_FLAG = "--codec-device"


def visible_devices(device: str) -> list[str]:
    """The devices named by a ``--codec-device`` value: "cuda" (or "auto" with a GPU) is every visible GPU,
    "cuda:0,cuda:2" those two; "cpu" (or "auto" without a GPU) the CPU; anything else that one device. A
    device that does not exist here is a ConfigError naming it, before any codec loads."""
    names = [name.strip() for name in str(device).split(",") if name.strip()]
    if not names:
        raise ConfigError(f"{_FLAG} {device!r} names no device", where=_FLAG,
                          fix="give auto, cpu, cuda or cuda:0,cuda:1")
    if names == ["auto"]:
        names = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    for name in names:
        problem = device_problem(name)
        if problem:
            raise ConfigError(f"{_FLAG} {device}: {name} is no device of this machine", where=_FLAG, fix=problem)
    if len(names) == 1 and names[0] != "cuda":
        return names
    if names == ["cuda"]:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices = []
    for name in names:
        index = name.removeprefix("cuda:")
        if not name.startswith("cuda:") or not index.isdigit():
            raise ConfigError(f"{_FLAG} {device}: {name!r} is not a GPU of the form cuda:<index>", where=_FLAG,
                              fix="list GPUs as cuda:0,cuda:2 (or give one device: cpu, cuda, cuda:1)")
        if f"cuda:{int(index)}" in devices:
            raise ConfigError(f"{_FLAG} {device} names {name} twice", where=_FLAG,
                              fix="name each GPU once; --workers N shares the GPUs among N workers")
        devices.append(f"cuda:{int(index)}")
    return devices


def worker_devices(device: str, num_workers: int | None) -> list[str]:
    """One device per worker, worker index -> device (round-robin when there are more workers than devices).
    ``num_workers=None``: one worker per GPU, or one CPU worker."""
    devices = visible_devices(device)
    if num_workers is None:
        num_workers = 1 if devices == ["cpu"] else len(devices)
    if num_workers < 1:
        raise ConfigError(f"--workers {num_workers} is out of range", where="--workers", fix="give a number >= 1")
    return [devices[i % len(devices)] for i in range(num_workers)]


def pin_device(device: str) -> None:
    """Make ``device`` this process's current CUDA device (before its codec loads), so that anything the
    codec library puts on "cuda" without an index lands on the worker's own GPU."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
