"""Several processes with ``torchrun``: process group, rank-0-first work, gradient averaging.

Launched with ``torchrun --nproc-per-node N -m medgan train ...`` (or ``sample``), each process
learns its rank from the environment. Training: every process draws its minibatches from its
own disjoint shard of the patch bank; the generator is wrapped in ``DistributedDataParallel``,
and the discriminator's gradients are averaged with one ``all_reduce`` after its backward pass,
because each iteration evaluates D three times (real, fake, and fake again for G), which DDP's
reducer does not allow within one backward. Only rank 0 writes files; the other ranks wait for
it where they need what it wrote (the patch cache) and get its errors re-raised.

Without ``WORLD_SIZE`` > 1 in the environment every function here is a no-op, so a plain
``medgan train`` and ``torchrun --nproc-per-node 1`` run exactly the same code. The process
group is created by the first call that needs it and destroyed when the process exits: later
``train``/``sample`` calls in the same process reuse it (PyTorch cannot re-create a group
under the same torchrun job once it was destroyed).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from medgan.errors import ConfigError

T = TypeVar("T")


@dataclass
class DistInfo:
    """Rank, world size and the device this process runs on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 only; an exception there is raised on every rank.

        Returns ``fn()`` on rank 0 and None elsewhere; all ranks leave together.
        """
        error: Exception | None = None
        result = None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # re-raised below, on every rank
                error = err
        error = self.broadcast(error)
        if error is not None:
            raise error
        return result

    def main_first(self, fn: Callable[[bool], T]) -> T:
        """``fn(is_main)`` on rank 0, then on the other ranks (which find what rank 0 cached).

        An exception on rank 0 is raised on every rank before the others start.
        """
        result = self.on_main(lambda: fn(True))
        if not self.is_main:
            result = fn(False)
        return result  # type: ignore[return-value]


def setup(device: torch.device, share_gpus: bool = False) -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1).

    ``device`` is the device asked for. On CUDA each process takes the GPU of its local rank
    and the group uses NCCL, which needs one GPU per process; ``share_gpus`` (sampling, which
    only exchanges small Python objects) lets more processes than GPUs take turns on them
    (local rank modulo the GPU count) over Gloo. On the CPU, Gloo. Ranks other than 0 log
    warnings and errors only.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if per_node > gpus and not share_gpus:
            raise ConfigError(f"torchrun --nproc-per-node must not exceed the {gpus} GPU(s) of "
                              f"this node for training, not {per_node}")
        device = torch.device("cuda", local % gpus)
        torch.cuda.set_device(device)
        backend = "gloo" if share_gpus else "nccl"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
        atexit.register(_destroy_group)
    if rank > 0:  # one copy of every progress message: rank 0's
        logging.getLogger("medgan").setLevel(logging.WARNING)
    return DistInfo(rank, world, local, device)


def _destroy_group() -> None:
    """Destroy the process group while the interpreter is still alive (an ``atexit`` hook).

    Gloo's worker threads drop their finished work items, which hold tensors with Python
    objects, some time after the collective returns. If that happens during interpreter
    finalisation, the thread cannot take the GIL and the process aborts ("terminate called
    without an active exception") after all its work is done. Collecting the garbage first
    frees wrappers in reference cycles (a finished run's DDP generator) that keep the group
    alive; once the last reference is gone, the group's destructor joins its worker threads.
    """
    if torch_dist.is_initialized():
        gc.collect()
        torch_dist.destroy_process_group()


def wrap(state: Any, dist: DistInfo, sync_batchnorm: bool = False) -> None:
    """Make the models of a ``TrainState`` start identical on every rank and stay so.

    The generator becomes ``DistributedDataParallel`` (which broadcasts rank 0's weights and
    buffers); the discriminator's weights and buffers are broadcast from rank 0 here, its
    gradients are averaged by :func:`average_gradients`. ``sync_batchnorm`` first converts the
    BatchNorm layers of both models so that batch statistics span all ranks.
    """
    if not dist.active:
        return
    if sync_batchnorm:
        convert = torch.nn.SyncBatchNorm.convert_sync_batchnorm
        state.generator = convert(state.generator)
        state.discriminator = convert(state.discriminator)
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    state.generator = DistributedDataParallel(state.generator, device_ids=ids)
    for tensor in state.discriminator.state_dict().values():
        torch_dist.broadcast(tensor, src=0)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def average_gradients(module: torch.nn.Module, dist: DistInfo) -> None:
    """Average gradients over processes in one flattened all_reduce (no-op single-process)."""
    if not dist.active:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch_dist.all_reduce(flat)
    flat /= dist.world_size
    torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(
        flat.split([g.numel() for g in grads]), grads, strict=True)])
