"""Minibatches of real patches drawn straight from the patch bank tensor (no DataLoader).

The bank is moved to the training device once when it fits (all of it on CPU; on CUDA when it
takes less than a quarter of the free memory), so each step is one gather + optional flips.
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
    """

    def __init__(self, bank: PatchBank, device: torch.device, batch_size: int,
                 rng: torch.Generator, flips: bool = True, shard: tuple[int, int] = (0, 1)
                 ) -> None:
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
        self.device, self.batch_size, self.rng, self.flips = device, batch_size, rng, flips
        self.spatial_dims = pairs.ndim - 2

    def next(self) -> torch.Tensor:
        """One minibatch on the training device."""
        pick = torch.randint(len(self.index), (self.batch_size,), device=self.rng.device,
                             generator=self.rng)
        batch = self.pairs[self.index[pick.to(self.store_device)]]
        batch = batch.to(self.device, non_blocking=True)
        if self.flips:
            shape = (self.batch_size,) + (1,) * (batch.ndim - 1)
            for axis in range(2, 4):  # in-plane axes x, y
                flip = torch.rand(shape, device=self.rng.device, generator=self.rng) < 0.5
                batch = torch.where(flip.to(self.device), batch.flip(axis), batch)
        return batch
