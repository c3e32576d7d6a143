"""Synthetic lesion pairs as a MONAI-style map dataset, and mixing them with real data.

Item ``i`` of :class:`SyntheticLesionDataset` is the pair that ``medgan sample`` with the same
checkpoint and seed writes as ``synth_{i:05d}`` (same per-sample seed, same mask
post-processing, empty masks redrawn the same way), here kept in memory as MetaTensors: bit for
bit with ``cache=True`` (decoded in the same fixed chunks), otherwise up to float rounding
(~1e-6; items decoded one by one to avoid padding work).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import ConcatDataset, Dataset, WeightedRandomSampler

from medgan.errors import ConfigError
from medgan.sampling.draws import iter_samples
from medgan.sampling.loader import LoadedGenerator, load_generator
from medgan.sampling.postprocess import MaskPostprocess
from medgan.sampling.writer import ras_affine

log = logging.getLogger(__name__)
Item = dict[Hashable, Any]


class SyntheticLesionDataset(Dataset):
    """``num_samples`` generated pairs as dicts, deterministic from ``(seed, index)``.

    Each item is ``{"image": MetaTensor (C, *P) float32, "label": MetaTensor (1, *P) float32
    {0, 1}, "synthetic": True, "seed": int}``; both MetaTensors carry the RAS affine of the
    checkpoint's ``spacing_mm`` (4x4 also for 2D patches, as MONAI's loaders produce).
    ``transform`` (e.g. a MONAI ``Compose`` of dictionary transforms) is applied to the dict.

    Args:
        generator: a :class:`LoadedGenerator` or a checkpoint path (loaded on ``device``).
        units: "model" = [-1, 1] as the generator produces; "physical" = HU / SUV / MR scale.
        cache: generate every item once up front in batches (fast for small ``num_samples``;
            needed with DataLoader workers when the generator lives on a GPU); otherwise items
            are generated on demand, one at a time.
        postprocess: mask clean-up settings (default :class:`MaskPostprocess`).
    """

    def __init__(
        self, generator: LoadedGenerator | str | Path, num_samples: int,
        transform: Callable[[Item], Any] | None = None, seed: int = 0,
        units: Literal["model", "physical"] = "model", device: str | torch.device | None = None,
        cache: bool = False, postprocess: MaskPostprocess | None = None, batch_size: int = 64,
    ) -> None:
        if units not in ("model", "physical"):
            raise ConfigError(f"units must be 'model' or 'physical', not {units!r}")
        if num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, not {num_samples}")
        if not isinstance(generator, LoadedGenerator):
            generator = load_generator(generator, device=device or "cpu", kind="dcgan")
        self.generator = generator
        self.num_samples = int(num_samples)
        self.transform = transform
        self.seed = int(seed)
        self.units = units
        self.postprocess = postprocess or MaskPostprocess()
        self.batch_size = batch_size
        self._affine = torch.as_tensor(ras_affine(generator.spacing_mm), dtype=torch.float64)
        self._cache: dict[int, Item] = {}
        if cache:
            self._cache = {i: self._item(i, s, img, m) for i, s, img, m in iter_samples(
                generator, list(range(self.num_samples)), self.seed, self.postprocess,
                batch_size)}

    def __len__(self) -> int:
        return self.num_samples

    def _item(self, index: int, seed: int, image: torch.Tensor, mask: np.ndarray) -> Item:
        if self.units == "physical":
            image = torch.as_tensor(self.generator.intensity.inverse(image))
        meta = {"synthetic": True, "seed": seed, "space": "RAS",
                "filename_or_obj": f"medgan-synthetic-{self.seed}-{index:05d}",
                "checkpoint_sha256": self.generator.checkpoint_sha256}
        return {
            "image": MetaTensor(image.float().clone(), affine=self._affine.clone(),
                                meta=dict(meta)),
            "label": MetaTensor(torch.from_numpy(mask)[None].float(),
                                affine=self._affine.clone(), meta=dict(meta)),
            "synthetic": True, "seed": seed,
        }

    def raw_item(self, index: int) -> Item:
        """Item ``index`` before ``transform``."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} is out of range for {self.num_samples} samples")
        index %= self.num_samples
        if index in self._cache:
            cached = self._cache[index]
            return {**cached, "image": cached["image"].clone(), "label": cached["label"].clone()}
        (i, s, image, mask), = iter_samples(self.generator, [index], self.seed,
                                            self.postprocess, batch_size=1, chunk=1)
        return self._item(i, s, image, mask)

    def __getitem__(self, index: int) -> Any:
        item = self.raw_item(int(index))
        return self.transform(item) if self.transform is not None else item


class _Tagged(Dataset):
    """A real dataset whose dict items get ``synthetic=False, seed=-1`` (so batches collate)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, Mapping):
            return {"synthetic": False, "seed": -1, **item}
        return item


def mix_real_synthetic(
    real: Dataset, synthetic: Dataset, synthetic_fraction: float, num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[ConcatDataset, WeightedRandomSampler]:
    """One dataset of real + synthetic items and a sampler drawing synthetic ones with
    probability ``synthetic_fraction`` (so batches hold that fraction on average).

    Real dict items are tagged ``{"synthetic": False, "seed": -1}`` so they collate with the
    synthetic ones. Items are drawn with replacement; ``num_samples`` per epoch defaults to
    ``len(real) / (1 - synthetic_fraction)`` (each real item about once per epoch), or
    ``len(synthetic)`` when the fraction is 1. Use as
    ``DataLoader(dataset, batch_size=..., sampler=sampler)``.
    """
    if not 0.0 <= synthetic_fraction <= 1.0:
        raise ConfigError(
            f"synthetic_fraction must be a number in [0, 1], not {synthetic_fraction}")
    n_real, n_syn = len(real), len(synthetic)  # type: ignore[arg-type]
    if n_real == 0 and synthetic_fraction < 1.0:
        raise ConfigError("the real dataset is empty; use synthetic_fraction=1 or add data")
    if n_syn == 0 and synthetic_fraction > 0.0:
        raise ConfigError("the synthetic dataset is empty; use synthetic_fraction=0")
    if num_samples is None:
        num_samples = (n_syn if synthetic_fraction == 1.0
                       else math.ceil(n_real / (1.0 - synthetic_fraction)))
    if num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, not {num_samples}")
    weights = torch.cat([
        torch.full((n_real,), (1.0 - synthetic_fraction) / max(n_real, 1), dtype=torch.float64),
        torch.full((n_syn,), synthetic_fraction / max(n_syn, 1), dtype=torch.float64),
    ])
    dataset = ConcatDataset([_Tagged(real), synthetic])
    sampler = WeightedRandomSampler(weights, num_samples=num_samples, replacement=True,
                                    generator=generator)
    return dataset, sampler
