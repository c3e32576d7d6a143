"""Where a new lesion may go: inside a tissue region, away from existing lesions, always fitting.

:func:`place_mask` computes *every* offset at which the whole mask lies inside the region and at
least ``margin_mm`` from any existing lesion (the region eroded by the mask's own extent, via
one FFT correlation), then draws one of them. No retry loop: a lesion of any size is placed
whenever it fits somewhere, and when it fits nowhere the result says why (:data:`SKIP_REASONS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.signal import fftconvolve

from medgan.augment.arrays import body_region
from medgan.errors import ConfigError, DataError

RegionKind = Literal["body", "intensity", "key", "anywhere"]

#: Reasons a placement (or an insertion) is skipped, as counted by the transforms.
SKIP_REASONS = (
    "empty mask", "mask larger than image", "empty region", "no anchor fits",
    "mask larger than patch", "image smaller than patch", "mask source gave no mask",
)


@dataclass(frozen=True)
class PlacementSettings:
    """Where lesions may go.

    ``region``: ``"body"`` (automatic body mask of channel 0, see
    :func:`medgan.augment.body_region`), ``"intensity"`` (channel 0 within ``intensity_range``,
    image units), ``"key"`` (a label/organ map passed with the data: voxels whose value is in
    ``region_values``, or > 0 when None) or ``"anywhere"``. ``margin_mm``: smallest distance
    from an existing lesion (label > 0).
    """

    region: RegionKind = "body"
    intensity_range: tuple[float, float] | None = None
    region_values: tuple[int, ...] | None = None
    margin_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.region not in ("body", "intensity", "key", "anywhere"):
            raise ConfigError(f"region must be body, intensity, key or anywhere, not "
                              f"{self.region!r}")
        if self.region == "intensity" and (self.intensity_range is None or
                                           not self.intensity_range[0] < self.intensity_range[1]):
            raise ConfigError(f"intensity_range must be (low, high) with low < high for "
                              f"region='intensity', not {self.intensity_range!r}")
        if self.margin_mm < 0:
            raise ConfigError(f"margin_mm must be >= 0, not {self.margin_mm!r}")


def tissue_region(image: np.ndarray, settings: PlacementSettings,
                  region_map: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``(*S)`` region of a channel-first ``image`` ``(C, *S)`` (NumPy, image units)."""
    spatial = tuple(image.shape[1:])
    if settings.region == "anywhere":
        return np.ones(spatial, bool)
    if settings.region == "body":
        return body_region(image)
    if settings.region == "intensity":
        lo, hi = settings.intensity_range  # type: ignore[misc]
        return (image[0] >= lo) & (image[0] <= hi)
    if region_map is None:
        raise DataError("region='key' needs a region map (the data under the region key), "
                        "but none was given")
    rm = np.asarray(region_map)
    rm = rm[0] if rm.ndim == len(spatial) + 1 else rm
    if rm.shape != spatial:
        raise DataError(f"region map shape {rm.shape} does not match the image's spatial shape "
                        f"{spatial}")
    return np.isin(rm, settings.region_values) if settings.region_values else rm > 0


@dataclass(frozen=True)
class Placement:
    """``offset`` (voxel index of the mask's first corner) or None with a ``reason``."""

    offset: tuple[int, ...] | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.offset is not None


def _near(occupied: np.ndarray, spacing_mm: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` of ``occupied`` (``occupied`` itself included)."""
    if not occupied.any():
        return occupied
    if margin_mm <= 0:
        return occupied
    return distance_transform_edt(~occupied, sampling=list(spacing_mm[:occupied.ndim])) <= margin_mm


def valid_offsets(mask: np.ndarray, region: np.ndarray, occupied: np.ndarray | None = None,
                  spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), margin_mm: float = 0.0
                  ) -> tuple[np.ndarray, tuple[int, ...]] | Placement:
    """Boolean map of allowed offsets and the offset of its first element, or a failed
    :class:`Placement`. ``mask`` has the region's rank, or one less (then one slice thick)."""
    m = mask.astype(bool)
    if m.ndim == region.ndim - 1:
        m = m[..., None]
    if m.ndim != region.ndim:
        raise DataError(f"mask must have {region.ndim} or {region.ndim - 1} axes for a region "
                        f"of shape {region.shape}, not shape {mask.shape}")
    if not m.any():
        return Placement(None, "empty mask")
    if any(a > b for a, b in zip(m.shape, region.shape, strict=True)):
        return Placement(None, "mask larger than image")
    if not region.any():
        return Placement(None, "empty region")
    idx = np.argwhere(region)
    lo = np.minimum(idx.min(0), np.asarray(region.shape) - m.shape)
    hi = np.maximum(idx.max(0) + 1, lo + m.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    forbidden = ~region[box]
    if occupied is not None and occupied.any():
        forbidden = forbidden | _near(occupied.astype(bool), spacing_mm, margin_mm)[box]
    flipped = m[tuple(slice(None, None, -1) for _ in range(m.ndim))].astype(np.float64)
    hits = fftconvolve(forbidden.astype(np.float64), flipped, mode="valid")  # (box - m + 1)
    return hits < 0.5, tuple(int(v) for v in lo)


def place_mask(mask: np.ndarray, region: np.ndarray, rng: np.random.Generator,
               occupied: np.ndarray | None = None,
               spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), margin_mm: float = 0.0) -> Placement:
    """Draw an offset at which every voxel of ``mask`` (tight, ``(*m)``) is in ``region``
    ``(*S)`` and at least ``margin_mm`` from ``occupied`` ``(*S)``.

    One draw from ``rng`` (also when nothing fits, so later draws do not shift). A 2D mask in a
    3D region is placed one slice thick.
    """
    u = rng.random()
    found = valid_offsets(mask, region, occupied, spacing_mm, margin_mm)
    if isinstance(found, Placement):
        return found
    valid, start = found
    flat = np.flatnonzero(valid)
    if flat.size == 0:
        return Placement(None, "no anchor fits")
    local = np.unravel_index(flat[min(int(u * flat.size), flat.size - 1)], valid.shape)
    return Placement(tuple(int(a + s) for a, s in zip(local, start, strict=True)))
