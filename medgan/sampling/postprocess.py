"""Clean-up of generated lesion masks: threshold, fill holes, drop specks, keep the largest part.

The generator's mask channel is a continuous value in [-1, 1] (``> 0`` = lesion). A raw
thresholded mask can hold single-voxel specks and pin holes that no annotator would draw; these
steps remove them so that the written label maps look like real segmentations. Components are
found with full connectivity (8-neighbourhood in 2D, 26 in 3D).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes
from skimage.measure import label as connected_components

from medgan.errors import DataError

#: Default smallest lesion component kept, in voxels, per number of spatial dimensions.
DEFAULT_MIN_SIZE: dict[int, int] = {2: 10, 3: 20}


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected components with fewer than ``min_size`` voxels."""
    labels = connected_components(mask, connectivity=mask.ndim)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False  # background
    return keep[labels]


def _largest(mask: np.ndarray) -> np.ndarray:
    labels = connected_components(mask, connectivity=mask.ndim)
    sizes = np.bincount(labels.ravel())
    if len(sizes) <= 1:
        return mask
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


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
        mask = binary_fill_holes(mask)
    if min_size > 1 and mask.any():
        mask = _remove_small(mask, min_size)
    if keep_largest and mask.any():
        mask = _largest(mask)
    return mask.astype(np.uint8)


@dataclass(frozen=True)
class MaskPostprocess:
    """Settings of :func:`postprocess_mask`, callable on one mask and recorded with the output."""

    threshold: float = 0.0
    fill_holes: bool = True
    min_size: int | None = None
    keep_largest: bool = False

    def __call__(self, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(X, Y[, Z])`` mask channel -> ``uint8`` {0, 1} mask."""
        return postprocess_mask(mask, self.threshold, self.fill_holes, self.min_size,
                                self.keep_largest)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
