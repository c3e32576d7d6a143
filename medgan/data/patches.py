"""Lesion-centred patch extraction from one preprocessed case (2D axial slices or 3D crops).

Patches are centred on the lesion (2D: the centroid of the lesion in each axial slice; 3D: the
centroid of each connected lesion component), jittered by up to ``center_jitter * patch_size``,
shifted to stay inside the scan, and padded (image -1, mask 0) when the scan is smaller than the
patch. A configurable fraction of lesion-free patches is drawn from inside the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import SpatialPad
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from medgan.config import DataConfig
from medgan.data.intensity import BACKGROUND


@dataclass
class CasePatches:
    """Patches of one case: ``images`` (N, C, *P) float32 in [-1, 1], ``masks`` (N, 1, *P) uint8."""

    images: torch.Tensor
    masks: torch.Tensor
    has_lesion: torch.Tensor  # (N,) bool


def _crop(volume: torch.Tensor, center: np.ndarray, size: int) -> torch.Tensor:
    """Crop ``(C, *S)`` around ``center`` (shifted inside the volume), padding where too small."""
    spatial = np.asarray(volume.shape[1:])
    start = np.clip(np.round(center - size / 2).astype(int), 0, np.maximum(spatial - size, 0))
    slices = tuple(slice(int(s), int(s) + size) for s in start)
    return volume[(slice(None), *slices)]


def _pad(patch: torch.Tensor, size: int, value: float) -> torch.Tensor:
    spatial = (size,) * (patch.ndim - 1)
    if tuple(patch.shape[1:]) == spatial:
        return patch
    return SpatialPad(spatial_size=spatial, method="symmetric", value=value)(patch).as_tensor()


def _jittered(center: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    amp = cfg.center_jitter * cfg.patch_size
    return center + rng.uniform(-amp, amp, size=center.shape)


def _lesion_centers_2d(mask: np.ndarray, cfg: DataConfig) -> list[tuple[int, np.ndarray]]:
    """(slice index, in-plane centroid) of every axial slice with enough lesion."""
    areas = mask.reshape(-1, mask.shape[-1]).sum(0)
    slices = np.flatnonzero(areas >= cfg.min_lesion_voxels)
    if len(slices) > cfg.patches_per_case:  # evenly spread over the lesion's extent
        slices = slices[np.linspace(0, len(slices) - 1, cfg.patches_per_case).round().astype(int)]
    return [(int(z), np.argwhere(mask[..., z]).mean(0)) for z in slices]


def _lesion_centers_3d(mask: np.ndarray, cfg: DataConfig) -> list[np.ndarray]:
    regions = [
        r for r in regionprops(connected_components(mask, connectivity=mask.ndim))
        if r.area >= cfg.min_lesion_voxels
    ]
    if not regions:
        return []
    regions.sort(key=lambda r: -r.area)
    return [np.asarray(regions[i % len(regions)].centroid) for i in range(cfg.patches_per_case)]


def _n_free(n_lesion: int, fraction: float) -> int:
    return int(round(n_lesion * fraction / (1.0 - fraction))) if fraction > 0 else 0


def extract_patches(
    image: torch.Tensor, mask: torch.Tensor, spatial_dims: int, cfg: DataConfig,
    rng: np.random.Generator,
) -> CasePatches:
    """Extract lesion-centred (and some lesion-free) patches from one case.

    Args:
        image: ``(C, X, Y, Z)`` float in [-1, 1], RAS (Z = axial slice index).
        mask: ``(1, X, Y, Z)`` binary lesion mask.
        spatial_dims: 2 for axial-slice patches ``(C, P, P)``, 3 for ``(C, P, P, P)``.
    """
    image = torch.as_tensor(image, dtype=torch.float32)
    mask = torch.as_tensor(mask, dtype=torch.uint8)
    m = mask[0].numpy().astype(bool)
    size = cfg.patch_size
    imgs: list[torch.Tensor] = []
    msks: list[torch.Tensor] = []
    lesion: list[bool] = []

    def add(img_patch: torch.Tensor, msk_patch: torch.Tensor) -> None:
        imgs.append(_pad(img_patch, size, BACKGROUND))
        msks.append(_pad(msk_patch, size, 0))
        lesion.append(bool(msks[-1].any()))

    if spatial_dims == 2:
        for z, c in _lesion_centers_2d(m, cfg):
            c = _jittered(c, cfg, rng)
            add(_crop(image[..., z], c, size), _crop(mask[..., z], c, size))
    else:
        for c in _lesion_centers_3d(m, cfg):
            c = _jittered(c, cfg, rng)
            add(_crop(image, c, size), _crop(mask, c, size))

    n_free = _n_free(max(len(imgs), 1), cfg.lesion_free_fraction)
    body = (image.amax(0) > BACKGROUND + 1e-3).numpy() & ~m
    candidates = np.argwhere(body)
    for _ in range(n_free * 20 if len(candidates) else 0):
        if sum(not x for x in lesion) >= n_free:
            break
        v = candidates[rng.integers(len(candidates))].astype(float)
        if spatial_dims == 2:
            z = int(v[-1])
            img_p, msk_p = _crop(image[..., z], v[:-1], size), _crop(mask[..., z], v[:-1], size)
        else:
            img_p, msk_p = _crop(image, v, size), _crop(mask, v, size)
        if not msk_p.any():
            add(img_p, msk_p)

    shape = (0, image.shape[0], *(size,) * spatial_dims)
    if not imgs:
        return CasePatches(
            torch.empty(shape), torch.empty((0, 1, *shape[2:]), dtype=torch.uint8),
            torch.empty(0, dtype=torch.bool),
        )
    return CasePatches(torch.stack(imgs), torch.stack(msks), torch.tensor(lesion))
