"""Per-modality intensity normalisation to [-1, 1] and its exact inverse to physical units.

Every modality uses one linear map per channel, ``[low, high] -> [-1, 1]`` with clipping:

* CT: ``low, high`` = the Hounsfield window (fixed, in HU);
* MR: ``low, high`` = percentiles of the case's foreground voxels (arbitrary scanner units);
* PET: ``low, high`` = ``0, suv_max`` (SUV);
* none: ``low, high`` = the configured value range (data already normalised).

The fitted ``low``/``high`` are recorded (:class:`IntensityMapping`) so that generated images can
be written back in physical units.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

from medgan.config import IntensityConfig
from medgan.errors import DataError

UNITS = {"ct": "HU", "mr": "a.u.", "pet": "SUV", "none": "a.u."}
MAPPING_META_KEY = "medgan_intensity"
#: Model-space value of "nothing": the low end of every mapping, padding, outside the body.
BACKGROUND = -1.0


@dataclass(frozen=True)
class IntensityMapping:
    """Linear map of each channel ``[low[c], high[c]] -> [-1, 1]`` (values clipped)."""

    modality: str
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def units(self) -> str:
        return UNITS[self.modality]

    def forward(self, image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Physical units -> [-1, 1]; ``image`` is channel-first ``(C, *spatial)``."""
        return _apply(image, self.low, self.high, to_model=True)

    def inverse(self, image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """[-1, 1] -> physical units; ``image`` is channel-first ``(C, *spatial)``."""
        return _apply(image, self.low, self.high, to_model=False)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "low": list(self.low), "high": list(self.high), "units": self.units}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntensityMapping:
        return cls(str(data["modality"]), tuple(data["low"]), tuple(data["high"]))

    @classmethod
    def combine(cls, mappings: Sequence[IntensityMapping]) -> IntensityMapping:
        """One mapping for a whole dataset: the per-channel median of the case mappings."""
        if not mappings:
            raise DataError("no cases to derive an intensity mapping from")
        low = np.median([m.low for m in mappings], axis=0)
        high = np.median([m.high for m in mappings], axis=0)
        return cls(mappings[0].modality, tuple(map(float, low)), tuple(map(float, high)))


def _apply(image, low, high, to_model: bool):
    channels = []
    for c in range(image.shape[0]):
        lo, hi = float(low[c]), float(high[c])
        if to_model:
            t = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True)
        else:
            t = ScaleIntensityRange(a_min=-1.0, a_max=1.0, b_min=lo, b_max=hi, clip=True)
        channels.append(t(image[c : c + 1]))
    if isinstance(image, np.ndarray):
        return np.concatenate([np.asarray(c) for c in channels], axis=0)
    return torch.cat([torch.as_tensor(c) for c in channels], dim=0)


def fit_mapping(image: np.ndarray | torch.Tensor, modality: str, cfg: IntensityConfig,
                source: str = "image") -> IntensityMapping:
    """Fit the mapping of one case; ``image`` is ``(C, *spatial)`` in physical units."""
    arr = np.asarray(image, dtype=np.float32)
    n = arr.shape[0]
    if modality == "ct":
        low, high = (cfg.hu_window[0],) * n, (cfg.hu_window[1],) * n
    elif modality == "pet":
        low, high = (0.0,) * n, (cfg.suv_max,) * n
    elif modality == "none":
        low, high = (cfg.value_range[0],) * n, (cfg.value_range[1],) * n
    elif modality == "mr":
        lows, highs = [], []
        for c in range(n):
            values = arr[c]
            if cfg.foreground == "nonzero" and np.count_nonzero(values) >= 0.01 * values.size:
                values = values[values != 0]
            lo, hi = np.percentile(values, cfg.percentiles)
            if not hi > lo:
                raise DataError(
                    f"{source}: channel {c} has no intensity spread between the "
                    f"{cfg.percentiles[0]}th and {cfg.percentiles[1]}th percentiles"
                )
            lows.append(float(lo))
            highs.append(float(hi))
        low, high = tuple(lows), tuple(highs)
    else:
        raise DataError(f"modality must be ct, mr, pet or none, not {modality!r}")
    return IntensityMapping(modality, tuple(map(float, low)), tuple(map(float, high)))


class NormalizeModality(Transform):
    """Array transform: fit the modality's mapping and apply it, ``(C, *spatial)`` -> [-1, 1]."""

    def __init__(self, modality: str, config: IntensityConfig | None = None) -> None:
        self.modality = modality
        self.config = config or IntensityConfig()

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, IntensityMapping]:
        mapping = fit_mapping(image, self.modality, self.config)
        return mapping.forward(image), mapping


class NormalizeModalityd(MapTransform):
    """Dictionary twin of :class:`NormalizeModality`; stores the mapping under
    ``data["medgan_intensity"]`` (a dict, see :meth:`IntensityMapping.to_dict`)."""

    def __init__(self, keys: KeysCollection, modality: str,
                 config: IntensityConfig | None = None) -> None:
        super().__init__(keys)
        self.normalizer = NormalizeModality(modality, config)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], mapping = self.normalizer(d[key])
            d[MAPPING_META_KEY] = mapping.to_dict()
        return d
