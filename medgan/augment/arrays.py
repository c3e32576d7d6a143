"""Array helpers shared by medgan's augmentations: NumPy/torch in, body region, windows.

Images are channel-first ``(C, *S)`` NumPy arrays or torch tensors, in any units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from medgan.errors import DataError

Array = np.ndarray | torch.Tensor

BODY_PERCENTILES = (1.0, 99.0)
BODY_FRACTION = 0.05  # body = above p1 + 5% of (p99 - p1)
MAX_STAT_VOXELS = 1_000_000  # percentiles of larger images use a strided subsample
SPACING_TOLERANCE = 0.01  # relative spacing difference per axis below which nothing is resampled


def to_numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def percentile_range(channel: Array) -> tuple[float, float]:
    """(p1, p99) of one channel, from at most ~1M voxels."""
    flat = to_numpy(channel).reshape(-1)
    step = max(1, flat.size // MAX_STAT_VOXELS)
    lo, hi = np.percentile(flat[::step].astype(np.float64), BODY_PERCENTILES)
    return float(lo), float(hi)


def body_region(image: Array) -> np.ndarray:
    """Boolean "inside the body" mask ``(*S)`` of a channel-first image ``(C, *S)``.

    Channel 0 above ``p1 + 0.05 * (p99 - p1)`` (air / background sit at or near p1 in CT, MR
    and PET alike), then holes filled per axial slice (last axis) for 3D, or in the plane for
    2D, so dark structures enclosed by the body (fat, gas, lung) still count as inside.
    """
    channel = to_numpy(image[0]).astype(np.float32, copy=False)
    lo, hi = percentile_range(channel)
    body = channel > lo + BODY_FRACTION * (hi - lo)
    if body.ndim == 2:
        return binary_fill_holes(body)
    for z in range(body.shape[-1]):
        body[..., z] = binary_fill_holes(body[..., z])
    return body


def resize_linear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, C, *S)`` -> ``(B, C, *size)`` by linear interpolation (1D-3D; voxel centres
    aligned as MONAI's ``Resize``: ``align_corners=False``)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return torch.nn.functional.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def spacing_factors(generator_mm: Sequence[float], image_mm: Sequence[float],
                    tolerance: float = SPACING_TOLERANCE) -> tuple[float, ...] | None:
    """Image voxels per generator voxel per axis (``generator_mm / image_mm``; an axis with a
    value <= 0 counts as 1), or None when no axis differs by more than ``tolerance``."""
    factors = tuple(g / s if g > 0 and s > 0 else 1.0
                    for g, s in zip(generator_mm, image_mm, strict=True))
    return None if all(abs(f - 1.0) <= tolerance for f in factors) else factors


def write_window(dst: Array, window: tuple, values: np.ndarray) -> Array:
    """Copy of ``dst`` with ``dst[window] = values`` in ``dst``'s type, dtype and device."""
    if isinstance(dst, torch.Tensor):
        out = dst.clone()
        if not dst.dtype.is_floating_point:
            values = np.rint(values)
        out[window] = torch.as_tensor(values, device=dst.device).to(dst.dtype)
        return out
    out = np.array(dst, copy=True)
    if not np.issubdtype(out.dtype, np.floating):
        values = np.rint(values)
    out[window] = values.astype(out.dtype)
    return out


def check_generator_input(img: Array, spatial_dims: int, image_channels: int) -> None:
    """``img`` must be ``(C, *S)`` with the generator's channels and rank (a 2D generator also
    works on 3D images, slice by slice); DataError naming the shape otherwise."""
    dims = img.ndim - 1
    if not (dims == spatial_dims or (spatial_dims == 2 and dims == 3)):
        raise DataError(f"image must be channel-first with {spatial_dims} spatial dimensions "
                        f"for this {spatial_dims}D generator, not shape {tuple(img.shape)}")
    if img.shape[0] != image_channels:
        raise DataError(f"image has {img.shape[0]} channel(s) but the generator works on "
                        f"{image_channels}; pass images with the channels it was trained on")
