"""Minibatches of real patches drawn straight from the patch bank tensor (no DataLoader).

The bank is moved to the training device once when it fits (all of it on CPU; on CUDA when it
takes less than a quarter of the free memory), so each step is one gather + optional flips with
no host synchronisation. A bank too large for the GPU stays in pinned host memory: the indices
are then drawn on the host, the rows gathered into one of two pinned staging buffers and copied
with ``non_blocking=True``, so the copy overlaps the previous step's GPU work.
"""

from __future__ import annotations

import logging

import torch

from medgan.data import PatchBank

log = logging.getLogger(__name__)


class PatchSampler:
    """Random minibatches ``(B, C + 1, *P)`` in [-1, 1] of a :class:`PatchBank`.

    ``shard=(rank, world_size)`` restricts each process to its own disjoint slice of patches.
    Random flips act on the in-plane axes (the through-plane axis of 3D patches is kept).
    Indices and flips come from ``rng`` (on the training device); when the bank stays on the
    host for a GPU run, the indices come from ``host_rng`` (a CPU generator) instead.
    ``memory_format`` is the layout of the returned batches (e.g. ``torch.channels_last``).
    """

    def __init__(self, bank: PatchBank, device: torch.device, batch_size: int,
                 rng: torch.Generator, flips: bool = True, shard: tuple[int, int] = (0, 1),
                 host_rng: torch.Generator | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        pairs = bank.pairs()
        rank, world = shard
        index = torch.arange(len(pairs))[rank::world]
        if len(index) == 0:
            index = torch.arange(len(pairs))
        self.store_device = device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if pairs.numel() * pairs.element_size() > free // 4:
                self.store_device = torch.device("cpu")
                pairs = pairs.pin_memory()
                log.info("patch bank kept in pinned host memory (too large for the GPU)")
        self.pairs = pairs.to(self.store_device)
        self.index = index.to(self.store_device)
        self.whole_bank = len(index) == len(pairs)  # index is arange: skip one gather per step
        self.device, self.batch_size, self.rng, self.flips = device, batch_size, rng, flips
        self.pick_rng = rng
        if self.store_device != device:
            self.pick_rng = host_rng if host_rng is not None else torch.Generator()
        self.spatial_dims = pairs.ndim - 2
        self.memory_format = memory_format
        self._staging: list[tuple[torch.Tensor, torch.cuda.Event]] = []
        self._turn = 0

    def next(self) -> torch.Tensor:
        """One minibatch on the training device."""
        pick = torch.randint(len(self.index), (self.batch_size,), device=self.pick_rng.device,
                             generator=self.pick_rng)
        rows = pick if self.whole_bank else self.index[pick]
        batch = self.pairs[rows] if self.store_device == self.device else self._upload(rows)
        if self.flips:
            shape = (self.batch_size,) + (1,) * (batch.ndim - 1)
            for axis in range(2, 4):  # in-plane axes x, y
                flip = torch.rand(shape, device=self.device, generator=self.rng) < 0.5
                batch = torch.where(flip, batch.flip(axis), batch)
        return batch.contiguous(memory_format=self.memory_format)

    def _upload(self, rows: torch.Tensor) -> torch.Tensor:
        """Gather ``rows`` of the host bank into a pinned buffer and copy it asynchronously."""
        if not self._staging:
            shape = (self.batch_size, *self.pairs.shape[1:])
            self._staging = [(torch.empty(shape, dtype=self.pairs.dtype, pin_memory=True),
                              torch.cuda.Event()) for _ in range(2)]
        buffer, copied = self._staging[self._turn]
        self._turn ^= 1
        copied.synchronize()  # the copy out of this buffer (two steps ago) has finished
        torch.index_select(self.pairs, 0, rows, out=buffer)
        batch = buffer.to(self.device, non_blocking=True)
        copied.record()
        return batch
