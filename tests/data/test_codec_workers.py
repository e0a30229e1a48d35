"""Codec workers of a shard build: worker index -> device, on a faked list of GPUs."""

from __future__ import annotations

import queue

import pytest
import torch

from higgs_ds.data import builder
from higgs_ds.data.codec_workers import worker_devices
from higgs_ds.errors import ConfigError


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this process sees `n` GPUs."""
    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return fake


def test_g_gpus_give_g_workers_on_g_distinct_devices(gpus):
    gpus(4)
    devices = worker_devices("cuda", None)
    assert devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert worker_devices("auto", None) == devices  # auto with GPUs: all of them


def test_named_devices_are_honoured_in_the_order_given(gpus):
    gpus(4)
    assert worker_devices("cuda:2,cuda:0", None) == ["cuda:2", "cuda:0"]
    assert worker_devices(" cuda:3 ", None) == ["cuda:3"]


def test_more_workers_than_gpus_share_them_round_robin_and_fewer_use_the_first(gpus):
    gpus(2)
    assert worker_devices("cuda", 5) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:0,cuda:1", 1) == ["cuda:0"]


def test_cpu_workers_stay_as_they_are(gpus):
    gpus(0)
    assert worker_devices("auto", None) == ["cpu"]
    assert worker_devices("cpu", 3) == ["cpu"] * 3
    gpus(2)
    assert worker_devices("cpu", None) == ["cpu"]  # the CPU when asked for, GPUs or not


@pytest.mark.parametrize(("visible", "device", "message"), [
    (0, "cuda", "no GPU is visible"),
    (0, "cuda:7", "cuda:7 is no device of this machine"),  # one device, on a machine without GPUs
    (2, "cuda:0,cuda:5", "cuda:5 is no device of this machine (--codec-device): 2 GPU(s) are visible"),
    (2, "banana", "not a device name"),
    (2, "cuda:1,cuda:1", "names cuda:1 twice"),
    (2, "cuda:0,cpu", "'cpu' is not a GPU"),
])
def test_impossible_device_lists_are_refused_naming_the_device(gpus, visible, device, message):
    gpus(visible)
    with pytest.raises(ConfigError, match="--codec-device") as err:
        worker_devices(device, None)
    assert message in str(err.value)


def test_worker_pins_its_device_before_loading_the_codec(monkeypatch, tmp_path):
    events = []
    monkeypatch.setattr(builder, "_WORKER_CODEC", None)  # restored afterwards
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: events.append(("set_device", str(device))))
    monkeypatch.setattr(builder, "load_codec", lambda cfg: events.append(("load_codec", cfg.device)) or "codec")
    weights = tmp_path / "codec.pth"
    weights.write_bytes(b"")
    devices = queue.SimpleQueue()
    devices.put("cuda:2")
    builder._init_worker(builder.CodecConfig(path=str(weights), device="cuda"), 1, None, devices)
    assert events == [("set_device", "cuda:2"), ("load_codec", "cuda:2")]
    assert builder._WORKER_CODEC == "codec" and devices.empty()  # each worker takes exactly one device

    events.clear()
    builder._init_worker(builder.CodecConfig(path=str(weights), device="cpu"), 1)  # one in-process worker
    assert events == [("load_codec", "cpu")]
