"""Sample filters: reject generated images that are too close to a real training patch."""

from __future__ import annotations

from pathlib import Path

import torch

from medgan.data import build_patch_bank, load_datalist
from medgan.errors import DataError
from medgan.sampling.draws import Accept
from medgan.sampling.loader import LoadedGenerator
from medgan.similarity import nearest_real_patches


def similarity_filter(loaded: LoadedGenerator, real_datalist: str | Path, max_similarity: float,
                       progress: bool) -> Accept:
    """Reject images whose NCC to the nearest real training patch exceeds the threshold."""
    bank = build_patch_bank(load_datalist(real_datalist), loaded.config,
                            seed=loaded.spec.seed, progress=progress)
    if bank.image_channels != loaded.image_channels:
        raise DataError(f"{real_datalist}: images have {bank.image_channels} channel(s) but the "
                        f"generator makes {loaded.image_channels}")
    real = bank.images.to(loaded.device)

    def accept(images: torch.Tensor) -> torch.Tensor:
        _, ncc = nearest_real_patches(images.to(loaded.device), real)
        return (ncc <= max_similarity).cpu()

    return accept
