"""Multi-process training with ``torchrun``: process-group set-up and gradient averaging.

Launched with ``torchrun --nproc-per-node N -m medgan train ...``, each process trains on its own
shard of the patch bank. The generator is wrapped in ``DistributedDataParallel``; the
discriminator's gradients are averaged with one ``all_reduce`` per parameter group after its
backward pass, because each D step evaluates D twice (real and fake batches) and the G step
once more, which DDP's reducer does not allow within one backward. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistInfo:
    """Rank, world size and the device this process trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()


def setup() -> DistInfo:
    """Initialise the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device)


def wrap(state, dist: DistInfo) -> None:
    """Wrap the generator in DDP and sync the discriminator's initial weights from rank 0."""
    if dist.world_size <= 1:
        return
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    state.generator = DistributedDataParallel(state.generator, device_ids=ids)
    for tensor in state.discriminator.state_dict().values():
        torch_dist.broadcast(tensor, src=0)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def average_gradients(module: torch.nn.Module, dist: DistInfo) -> None:
    """Average gradients over processes in one flattened all_reduce (no-op single-process)."""
    if dist.world_size <= 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch_dist.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def cleanup() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
