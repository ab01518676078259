"""Data parallelism for training: joining the ``torchrun`` process group, sharing gradients,
leaving it cleanly.

When launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the process group is initialised
(gloo on CPU, nccl on CUDA). Every rank draws the same global batch (a seeded permutation per
epoch) and takes its shard ``batch[rank::world]``; each rank's loss is normalised by the counts
of the *global* batch, so the summed gradients are those of one process with the whole batch.
The model is wrapped in ``DistributedDataParallel`` (``ddp: wrapper``; it averages, so the loss
is multiplied by the world size). The force loss differentiates through
``autograd.grad(create_graph=True)`` inside the forward; DDP's reducer handles that double
backward correctly (the tests compare 2 processes with 1). ``ddp: allreduce`` instead sums the
gradients with one flat ``all_reduce`` per step (:func:`share_gradients`). A rank whose shard is
empty runs a zero-weighted copy of the batch's first structure so that every rank takes part in
the collective calls. Only rank 0 writes checkpoints, logs, progress and the artifact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        here = True
    return DistInfo(rank=rank, world=world, local_rank=local_rank, initialised_here=here)


def share_gradients(params: list[torch.Tensor], grads: list[torch.Tensor], monitor: torch.Tensor, info: DistInfo,
                    wrapper: bool) -> torch.Tensor:
    """Set each parameter's ``.grad`` to the gradient summed over ranks (DDP's ``wrapper`` has
    reduced them already; ``allreduce`` sums them here in one flat call, with the ``monitor``
    numbers of the step); returns the monitor summed over ranks."""
    if wrapper:
        import torch.distributed as dist

        dist.all_reduce(monitor)
        for p, g in zip(params, grads):
            p.grad = g
    elif info.active:
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in grads] + [monitor])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()
        monitor = flat[offset:]
    else:
        for p, g in zip(params, grads):
            p.grad = g
    return monitor


def leave_process_group(info: DistInfo) -> None:
    """Leave the process group when this process joined it (:attr:`DistInfo.initialised_here`).

    Every rank first finishes all collectives and checks in at the rendezvous store; only then
    are the gloo/nccl connections torn down (a rank that destroys its group while a peer is
    still completing the last barrier makes that peer fail: pytorch/gloo#155).
    """
    if not info.initialised_here:
        return
    import torch.distributed as dist

    try:
        dist.barrier()
        store = dist.distributed_c10d._get_default_store()
        store.add("mlffd/closed", 1)
        deadline = time.time() + 300
        while store.add("mlffd/closed", 0) < info.world and time.time() < deadline:
            time.sleep(0.02)
    finally:
        dist.destroy_process_group()
