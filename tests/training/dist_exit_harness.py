"""Run under torchrun by test_distributed.py: leave right after a collective, group held in a cycle.

    torchrun --standalone --nproc-per-node 2 dist_exit_harness.py

Both processes are pinned to one CPU, so that Gloo's worker thread is still holding the last
broadcast's work item (tensors with Python objects) when the main thread reaches the end of
the script. A reference cycle keeps the process group alive, as a finished run's
DistributedDataParallel generator does. Without medgan's exit hook destroying the group while
the interpreter is alive, the worker thread releases the item during interpreter finalisation
and the process aborts ("terminate called without an active exception").
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import torch  # noqa: E402
import torch.distributed as torch_dist  # noqa: E402

from medgan import distributed  # noqa: E402


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.group = torch_dist.group.WORLD


if __name__ == "__main__":
    dist = distributed.setup(torch.device("cpu"))
    held = _Cycle()
    for _ in range(3):
        dist.broadcast(RuntimeError("refused on rank 0") if dist.is_main else None)
    del held
