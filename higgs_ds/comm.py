"""Every collective of the project goes through here (a test forbids `torch.distributed` collectives
anywhere else), so that one rule holds everywhere: a collective runs on the device of the process
group's backend. NCCL only takes CUDA tensors, gloo only CPU ones; the caller passes whatever it has
and gets the result back in its own tensor, on its own device.

Without a process group (a single process: tests, `launch/generate.py`, export) every collective is
the identity, which is what it computes over a world of one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

ReduceOp = dist.ReduceOp


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def backend_device(group=None) -> torch.device | None:
    """Where the group's backend wants tensors: CUDA for NCCL, CPU for gloo (and DeepSpeed's CPU
    backends); None for a mixed backend ("cpu:gloo,cuda:nccl"), which takes either."""
    backend = str(dist.get_backend(group)).lower()
    if "," in backend or ":" in backend:
        return None
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _placed(tensor: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return tensor if device is None or tensor.device == device else tensor.to(device)


def _give_back(result: torch.Tensor, caller: torch.Tensor) -> torch.Tensor:
    if result is not caller:
        caller.copy_(result)
    return caller


def all_reduce(tensor: torch.Tensor, op=ReduceOp.SUM, group=None) -> torch.Tensor:
    """Reduce `tensor` over all ranks, in place; returns it."""
    if not is_distributed():
        return tensor
    work = _placed(tensor, backend_device(group))
    dist.all_reduce(work, op=op, group=group)
    return _give_back(work, tensor)


def broadcast(tensor: torch.Tensor, src: int = 0, group=None) -> torch.Tensor:
    """Rank `src`'s `tensor` on every rank, in place; returns it."""
    if not is_distributed():
        return tensor
    work = _placed(tensor, backend_device(group))
    dist.broadcast(work, src=src, group=group)
    return _give_back(work, tensor)


def all_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    """Every rank's `tensor` (same shape everywhere), in rank order, on the caller's device."""
    if not is_distributed():
        return [tensor.clone()]
    work = _placed(tensor, backend_device(group))
    gathered = [torch.empty_like(work) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, work, group=group)
    return [g.to(tensor.device) for g in gathered]


def reduce_scatter(output: torch.Tensor, inputs: list[torch.Tensor], op=ReduceOp.SUM, group=None) -> torch.Tensor:
    """`output` = the reduction over ranks of every rank's `inputs[rank]`; returns `output`."""
    if not is_distributed():
        return output.copy_(inputs[0])
    device = backend_device(group)
    work = _placed(output, device)
    dist.reduce_scatter(work, [_placed(t, device) for t in inputs], op=op, group=group)
    return _give_back(work, output)


def barrier(group=None) -> None:
    if is_distributed():
        dist.barrier(group=group)


def broadcast_object_list(objects: list, src: int = 0, group=None) -> list:
    """Rank `src`'s picklable objects on every rank, in place. Under NCCL the pickles travel through
    the current CUDA device, so every rank must have called `torch.cuda.set_device` (as
    `higgs_ds.train.distributed.init_distributed` does) or they would all use GPU 0."""
    if is_distributed():
        dist.broadcast_object_list(objects, src=src, group=group, device=backend_device(group))
    return objects
