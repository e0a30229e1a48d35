"""ds_configs/zero3_multinode.json (ZeRO++): filled from the recipe like the other DeepSpeed JSONs, with
the hierarchical partition = the ranks of one node; valid for DeepSpeed; and its hierarchical
partitioning trained on CPU ranks. The quantized collectives (int8 weights, int4 gradients) run DeepSpeed's
CUDA quantizer kernels, so only a GPU run exercises them (docs/sizing.md, "Multi-node: ZeRO++")."""

import json

import pytest
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

from higgs_ds.train import distributed
from higgs_ds.train.config import load_config
from higgs_ds.train.ds_config import build_ds_config, zeropp_summary
from higgs_ds.train.metrics import read_metrics
from tests import harness

MULTINODE = harness.REPO / "ds_configs" / "zero3_multinode.json"


def _cfg(*overrides: str):
    return load_config(None, ["data.stream.max_batch_size=4", "grad_accum=2", "precision=bf16", *overrides])


@pytest.mark.parametrize("world, local, hpz", [(32, 8, 8), (16, 8, 8), (8, 8, 1), (2, 8, 1), (4, 2, 2)])
def test_the_hierarchical_partition_is_one_nodes_ranks(world, local, hpz):
    ds = build_ds_config(MULTINODE, _cfg(), world_size=world, local_world_size=local)
    zero = ds["zero_optimization"]
    assert zero["zero_hpz_partition_size"] == hpz
    assert zero["zero_quantized_weights"] and zero["zero_quantized_gradients"] and zero["stage"] == 3
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (4, 2)
    assert ds["train_batch_size"] == 4 * 2 * world and ds["bf16"]["enabled"] is True
    parsed = DeepSpeedZeroConfig(**zero)  # DeepSpeed's own validation of the section
    assert (parsed.zero_hpz_partition_size, parsed.zero_quantized_weights, parsed.zero_quantized_gradients) == \
        (hpz, True, True)


def test_the_start_up_line_names_what_of_zeropp_is_on():
    ds = build_ds_config(MULTINODE, _cfg(), world_size=16, local_world_size=8)
    assert zeropp_summary(ds) == " with ZeRO++ (hierarchical partition 8, int8 weights, int4 gradients)"
    assert zeropp_summary(build_ds_config(harness.REPO / "ds_configs" / "zero3.json", _cfg(), world_size=16)) == ""


def test_uneven_nodes_are_refused():
    with pytest.raises(ValueError, match=r"zero3_multinode.json: .*world size 12 is not a multiple of 8 ranks"):
        build_ds_config(MULTINODE, _cfg(), world_size=12, local_world_size=8)


@pytest.mark.parametrize("env, expected", [
    ({"LOCAL_WORLD_SIZE": "4"}, 4),  # torchrun
    ({"LOCAL_SIZE": "8"}, 8),  # the DeepSpeed launcher
    ({"SLURM_NTASKS_PER_NODE": "8"}, 8),  # srun --ntasks-per-node=8
    ({"LOCAL_SIZE": "8", "SLURM_NTASKS_PER_NODE": "1"}, 8),  # one DeepSpeed launcher per node under srun
    ({}, 1),  # no launcher and no GPU
])
def test_ranks_per_node_come_from_the_launcher(monkeypatch, env, expected):
    for var in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert distributed.local_world_size() == expected


@pytest.mark.integration
def test_hierarchical_partitioning_trains_on_cpu_ranks(tmp_path, random_data):
    """4 gloo ranks as 2 "nodes" of 2 (LOCAL_WORLD_SIZE=2): ZeRO++'s secondary partition groups are built
    and training runs. The quantized collectives are switched off here: they need CUDA."""
    ds = json.loads(MULTINODE.read_text())
    ds["zero_optimization"].update(zero_quantized_weights=False, zero_quantized_gradients=False)
    cpu_json = tmp_path / "zero3_hpz_cpu.json"
    cpu_json.write_text(json.dumps(ds))
    run_dir = tmp_path / "run"
    proc = harness.checked(harness.train(run_dir, random_data, "steps=3", ranks=4, ds_config=str(cpu_json),
                                         LOCAL_WORLD_SIZE="2"))
    assert "ZeRO stage 3 with ZeRO++ (hierarchical partition 2), fp32" in proc.stdout + proc.stderr
    losses = harness.losses(run_dir)
    assert sorted(losses) == [1, 2, 3] and all(0 < loss < 20 for loss, _, _ in losses.values())
    # the fused-op choices are on record (CPU ranks: the PyTorch references)
    (kernels,) = read_metrics(run_dir / "metrics.jsonl", "kernels")
    assert kernels["step"] == 1 and kernels["routed_ffn/float32"] == "torch"
