"""One rule for collectives: every torch.distributed / deepspeed.comm collective goes through
`higgs_ds.comm`, which runs it on the device of the process group's backend (CUDA for NCCL, CPU for
gloo) and hands the result back in the caller's tensor. The first test reads the source and finds any
direct call; the others prove the device rule with a faked backend."""

import ast
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from higgs_ds import comm

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("higgs_ds", "kernels", "launch", "scripts")
ALLOWED = REPO / "higgs_ds" / "comm.py"
COLLECTIVES = {
    "all_reduce", "all_reduce_coalesced", "broadcast", "all_gather", "all_gather_into_tensor", "all_gather_object",
    "all_gather_coalesced", "reduce", "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_fn", "gather",
    "gather_object", "scatter", "scatter_object_list", "barrier", "monitored_barrier", "broadcast_object_list",
    "all_to_all", "all_to_all_single", "send", "recv", "isend", "irecv", "batch_isend_irecv", "inference_all_reduce",
}
COMM_MODULES = ("torch.distributed", "deepspeed.comm")


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted module or object it stands for (from every import in the file)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def direct_collectives(source: str) -> list[str]:
    """`line: name` of every collective called (or imported by name) from torch.distributed or deepspeed.comm."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in COMM_MODULES:
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name in COLLECTIVES]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            if name and name.startswith(tuple(m + "." for m in COMM_MODULES)) and name.rsplit(".", 1)[1] in COLLECTIVES:
                found.append(f"{node.lineno}: {name}")
    return found


def test_the_scan_finds_every_spelling():
    source = """
import torch
import torch.distributed as dist
import deepspeed
from deepspeed import comm as ds_comm
from torch.distributed import barrier
from higgs_ds import comm
torch.distributed.all_reduce(x)
dist.broadcast_object_list(objs, src=0)
deepspeed.comm.all_gather(out, x)
ds_comm.reduce_scatter(out, xs)
comm.all_reduce(x)
dist.get_rank()
"""
    assert direct_collectives(source) == [
        "6: from torch.distributed import barrier", "8: torch.distributed.all_reduce",
        "9: torch.distributed.broadcast_object_list", "10: deepspeed.comm.all_gather",
        "11: deepspeed.comm.reduce_scatter"]


def test_no_collective_outside_the_comm_module():
    offenders = {}
    files = [p for folder in SCANNED for p in (REPO / folder).rglob("*.py") if p != ALLOWED]
    assert len(files) > 50  # the scan really covers the tree
    for path in files:
        if calls := direct_collectives(path.read_text(encoding="utf-8")):
            offenders[str(path.relative_to(REPO))] = calls
    assert not offenders, f"call these through higgs_ds.comm: {offenders}"


@pytest.fixture
def fake_group(monkeypatch):
    """A process group that is not there: the collective records the tensor it was given and writes
    the result a world of two identical ranks would (the backend name is faked per test)."""
    seen = {}

    def fake_all_reduce(tensor, op=None, group=None):
        seen["device"] = tensor.device
        seen["tensor"] = tensor
        tensor.mul_(2)  # a world of two identical ranks, summed

    def fake_broadcast_object_list(objects, src=0, group=None, device=None):
        seen["device"] = device
        objects[0] = "from rank 0"

    monkeypatch.setattr(comm, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(dist, "broadcast_object_list", fake_broadcast_object_list)
    return seen


def _fake_backend(monkeypatch, name: str):
    monkeypatch.setattr(dist, "get_backend", lambda group=None: name)


def test_nccl_moves_a_cpu_tensor_to_the_backend_device_and_back(monkeypatch, fake_group):
    _fake_backend(monkeypatch, "nccl")
    cuda = torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    moved = []
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):  # no GPU here: record the move to CUDA, keep the data on the CPU
        if args and args[0] == cuda:
            copy = self.clone()
            moved.append(copy)
            return copy
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    missing = torch.tensor([0.0, 1.0])
    returned = comm.all_reduce(missing)
    assert comm.backend_device() == cuda
    assert len(moved) == 1 and fake_group["tensor"] is moved[0]  # the collective saw the moved copy
    assert returned is missing and missing.tolist() == [0.0, 2.0]  # the result is in the caller's tensor

    objects = [None]
    comm.broadcast_object_list(objects)
    assert objects == ["from rank 0"] and fake_group["device"] == cuda


def test_gloo_keeps_the_tensor_on_the_cpu(monkeypatch, fake_group):
    _fake_backend(monkeypatch, "gloo")
    flag = torch.tensor([1.0])
    assert comm.all_reduce(flag, comm.ReduceOp.MAX) is flag
    assert fake_group["tensor"] is flag and fake_group["device"] == torch.device("cpu")
    assert flag.tolist() == [2.0]


def test_a_mixed_backend_takes_the_tensor_where_it_is(monkeypatch, fake_group):
    _fake_backend(monkeypatch, "cpu:gloo,cuda:nccl")
    flag = torch.tensor([1.0])
    comm.all_reduce(flag)
    assert fake_group["tensor"] is flag


def test_without_a_process_group_collectives_are_the_identity():
    assert not comm.is_distributed()
    x = torch.tensor([1.0, 2.0])
    assert comm.all_reduce(x) is x and x.tolist() == [1.0, 2.0]
    assert comm.broadcast(x) is x
    assert [g.tolist() for g in comm.all_gather(x)] == [[1.0, 2.0]]
    out = torch.zeros(2)
    assert comm.reduce_scatter(out, [x]).tolist() == [1.0, 2.0]
    comm.barrier()
    assert comm.broadcast_object_list(["a"]) == ["a"]
    assert (comm.rank(), comm.world_size()) == (0, 1)


def test_a_real_single_rank_gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        x = torch.tensor([3.0])
        assert comm.backend_device() == torch.device("cpu")
        assert comm.all_reduce(x, comm.ReduceOp.MAX) is x and x.tolist() == [3.0]
        assert [g.tolist() for g in comm.all_gather(x)] == [[3.0]]
        assert comm.reduce_scatter(torch.zeros(1), [torch.tensor([5.0])]).tolist() == [5.0]
        assert comm.broadcast_object_list([{"tag": "step000020"}]) == [{"tag": "step000020"}]
        comm.barrier()
        assert (comm.rank(), comm.world_size()) == (0, 1)
    finally:
        dist.destroy_process_group()


def test_each_rank_selects_its_gpu_before_the_process_group_starts(monkeypatch):
    import deepspeed

    from higgs_ds.train import distributed

    events = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: events.append(("set_device", index)))
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: events.append(("init", kwargs["timeout"])))
    # every variable init_distributed may fill in is set here, so monkeypatch restores it afterwards
    for var, value in {"RANK": "11", "LOCAL_RANK": "3", "WORLD_SIZE": "16", "MASTER_ADDR": "10.0.0.1",
                       "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(var, value)
    assert distributed.init_distributed(timeout_s=60) == (11, 16)
    assert [e[0] for e in events] == ["set_device", "init"] and events[0][1] == 3


def test_local_rank_and_visible_gpus():
    from higgs_ds.train.distributed import local_device

    assert local_device(3, 8) == 3  # every rank sees the node's GPUs: the DeepSpeed launcher, srun --gpus-per-node
    assert local_device(3, 1) == 0  # Slurm bound one GPU to the task
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=8 but this process sees 4 GPUs"):
        local_device(8, 4)


@pytest.mark.parametrize("world, compiled", [("1", False), ("2", True)])
def test_a_lone_cpu_rank_does_not_build_the_shared_memory_allreduce(monkeypatch, world, compiled):
    """DeepSpeed JIT-compiles its CPU shared-memory allreduce when its backend starts (~30 s on a fresh
    install); one process has no peer to share memory with, so it is switched off there and only there."""
    import deepspeed

    from higgs_ds.train import distributed

    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, distributed.SHM_OP, True)
    monkeypatch.setattr(deepspeed, "init_distributed",
                        lambda **kwargs: seen.append(deepspeed.ops.__compatible_ops__[distributed.SHM_OP]))
    monkeypatch.setattr(distributed, "unlink_shm_allreduce_buffer", lambda: None)
    for var, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(var, value)
    assert distributed.init_distributed(timeout_s=60) == (0, int(world))
    assert seen == [compiled]
    assert "deepspeed_shm_comm" in deepspeed.ops.op_builder.all_ops.ALL_OPS  # the name DeepSpeed gives the op


def test_deepspeed_muon_is_imported_without_compiling_and_compiles_on_first_call(monkeypatch):
    """`deepspeed.initialize` imports DeepSpeed's Muon module, whose `torch.compile` at import loads
    Inductor (~2 s per rank); ours defers each compile to the function's first call."""
    from higgs_ds.train import distributed

    muon_modules = [name for name in sys.modules if name.startswith("deepspeed.runtime.zero.muon")]
    compiled = []

    def record_compile(model=None, **options):
        compiled.append(model.__name__)
        return model

    monkeypatch.setattr(torch, "compile", record_compile)
    for name in muon_modules:
        monkeypatch.delitem(sys.modules, name)
    try:
        distributed.import_muon_compiling_on_first_call()
        assert distributed.MUON_MODULE in sys.modules and compiled == []  # imported, nothing compiled
        assert torch.compile is record_compile  # put back
        from deepspeed.runtime.zero.muon.original_muon import zeropower_via_newtonschulz5

        grad = torch.randn(4, 6)
        for _ in range(2):
            orthogonal = zeropower_via_newtonschulz5(grad, steps=5)
        assert compiled == ["zeropower_via_newtonschulz5"]  # once, at the first call
        assert orthogonal.shape == grad.shape and torch.isfinite(orthogonal).all()
    finally:  # the next import of Muon in this process compiles as DeepSpeed wrote it
        for name in [n for n in sys.modules if n.startswith("deepspeed.runtime.zero.muon")]:
            if name not in muon_modules:
                del sys.modules[name]
