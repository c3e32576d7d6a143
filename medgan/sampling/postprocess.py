"""Clean-up of generated lesion masks: threshold, fill holes, drop specks, keep the largest part.

The generator's mask channel is a continuous value in [-1, 1] (``> 0`` = lesion). A raw
thresholded mask can hold single-voxel specks and pin holes that no annotator would draw; these
steps remove them so that the written label maps look like real segmentations. Components are
found with full connectivity (8-neighbourhood in 2D, 26 in 3D).

Lesion size in millimetres: :func:`equivalent_diameter_mm` gives the diameter of the disc (2D)
or ball (3D) with the same area or volume as the whole mask, from the voxel spacing. One number
serves both ranks and reads like a clinical size; :meth:`MaskPostprocess.too_small` compares it
with ``min_diameter_mm`` so that samplers can redraw lesions smaller than that.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medgan.errors import ConfigError, DataError

#: Default smallest lesion component kept, in voxels, per number of spatial dimensions.
DEFAULT_MIN_SIZE: dict[int, int] = {2: 10, 3: 20}
#: Default smallest whole lesion kept, as an equivalent diameter in mm (see the module docstring).
DEFAULT_MIN_DIAMETER_MM = 3.0


@functools.lru_cache(maxsize=4)
def _structure(ndim: int, full: bool) -> np.ndarray:
    """Neighbourhood for labelling: full (8 in 2D, 26 in 3D) or faces only (4 / 6)."""
    return ndimage.generate_binary_structure(ndim, ndim if full else 1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not reach the array border.

    The same result as ``scipy.ndimage.binary_fill_holes`` (background connected through
    faces only, the dual of the full connectivity used for lesions), from one labelling of the
    background instead of an iterated dilation: about 4x faster on 64x64 masks.
    """
    background, n = ndimage.label(~mask, structure=_structure(mask.ndim, full=False))
    if n == 0:
        return mask
    outside = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):  # labels on the two faces of every axis reach the border
        outside[np.take(background, [0, -1], axis=axis)] = True
    outside[0] = False  # label 0 is the lesion itself
    return mask | (~outside[background] & (background > 0))


def _filter_components(mask: np.ndarray, min_size: int, keep_largest: bool) -> np.ndarray:
    """Keep components (full connectivity) of at least ``min_size`` voxels, optionally only
    the largest of them (the first in scan order on a tie)."""
    labels, n = ndimage.label(mask, structure=_structure(mask.ndim, full=True))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    keep = sizes >= max(min_size, 1)
    if keep_largest and keep.any():
        largest = int(np.argmax(sizes))
        keep[:] = False
        keep[largest] = True
    return keep[labels]


def postprocess_mask(
    mask_logits_or_prob: np.ndarray | torch.Tensor, threshold: float = 0.0,
    fill_holes: bool = True, min_size: int | None = None, keep_largest: bool = False,
) -> np.ndarray:
    """Binary lesion mask from a generated mask channel.

    Args:
        mask_logits_or_prob: spatial array ``(X, Y)`` or ``(X, Y, Z)`` (no channel axis); model
            output in [-1, 1] (threshold 0) or a probability map (threshold 0.5).
        threshold: voxels strictly above it are lesion.
        fill_holes: fill cavities fully enclosed by lesion.
        min_size: components with fewer voxels are removed; None = 10 (2D) or 20 (3D);
            0 or 1 keeps everything.
        keep_largest: keep only the largest connected component.

    Returns:
        ``uint8`` array of the input's shape with values {0, 1}.
    """
    arr = mask_logits_or_prob
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().float().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"mask must have 2 or 3 spatial dimensions and no channel axis, not shape "
            f"{tuple(arr.shape)}"
        )
    if min_size is None:
        min_size = DEFAULT_MIN_SIZE[arr.ndim]
    if min_size < 0:
        raise DataError(f"min_size must be a non-negative number of voxels, not {min_size}")
    mask = arr > threshold
    if fill_holes and mask.any():
        mask = _fill_holes(mask)
    if (min_size > 1 or keep_largest) and mask.any():
        mask = _filter_components(mask, min_size, keep_largest)
    return mask.astype(np.uint8)


def equivalent_diameter_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Diameter in mm of the disc (2D) or ball (3D) whose area / volume equals the mask's.

    Args:
        mask: binary ``(X, Y)`` or ``(X, Y, Z)`` array (no channel axis).
        spacing_mm: voxel spacing (x, y[, z]) in mm; the first ``mask.ndim`` values are used.

    Returns:
        ``2 * sqrt(area / pi)`` in 2D, ``cbrt(6 * volume / pi)`` in 3D; 0 for an empty mask.
    """
    if mask.ndim not in (2, 3) or len(spacing_mm) < mask.ndim:
        raise DataError(f"mask must have 2 or 3 spatial dimensions with a spacing for each, not "
                        f"shape {tuple(mask.shape)} with spacing {list(spacing_mm)}")
    size = float(np.count_nonzero(mask)) * math.prod(float(s) for s in spacing_mm[:mask.ndim])
    if mask.ndim == 2:
        return 2.0 * math.sqrt(size / math.pi)
    return (6.0 * size / math.pi) ** (1.0 / 3.0)


@dataclass(frozen=True)
class MaskPostprocess:
    """Settings of :func:`postprocess_mask`, callable on one mask and recorded with the output.

    ``min_diameter_mm`` is not applied by the call (it needs the voxel spacing): samplers ask
    :meth:`too_small` and redraw the sample; 0 disables it.
    """

    threshold: float = 0.0
    fill_holes: bool = True
    min_size: int | None = None
    keep_largest: bool = False
    min_diameter_mm: float = DEFAULT_MIN_DIAMETER_MM

    def __post_init__(self) -> None:
        d = self.min_diameter_mm
        if isinstance(d, bool) or not isinstance(d, int | float) or not d >= 0:
            raise ConfigError(f"min_diameter_mm must be a non-negative number of mm, not {d!r}")

    def __call__(self, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(X, Y[, Z])`` mask channel -> ``uint8`` {0, 1} mask."""
        return postprocess_mask(mask, self.threshold, self.fill_holes, self.min_size,
                                self.keep_largest)

    def too_small(self, mask: np.ndarray, spacing_mm: Sequence[float]) -> bool:
        """True when the non-empty post-processed ``mask`` has an equivalent diameter below
        ``min_diameter_mm`` at voxel spacing ``spacing_mm`` (x, y[, z]) in mm."""
        if self.min_diameter_mm <= 0 or not mask.any():
            return False
        return equivalent_diameter_mm(mask, spacing_mm) < self.min_diameter_mm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
