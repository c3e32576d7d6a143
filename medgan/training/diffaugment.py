"""Differentiable augmentation (DiffAugment; Zhao et al., 2020) for image + mask batches.

The same kind of augmentation is applied to every batch the discriminator sees, real or fake,
so that D cannot overfit a small training set while G still receives gradients through it.
Batches are ``(B, C + 1, *spatial)`` in [-1, 1] with the lesion mask as the last channel; the
code is rank-agnostic (2D and 3D). Intensity policies change only the image channels;
geometric ones move or erase image and mask together, filling with the background value -1.
Every op is vectorised over the batch and differentiable w.r.t. the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medgan.config import DIFFAUGMENT_POLICIES
from medgan.data.intensity import BACKGROUND
from medgan.errors import ConfigError


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) per sample, shaped ``(B, 1, *[1] * d)`` to broadcast over ``x``."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return torch.rand(shape, generator=generator, device=x.device).to(x.dtype)


def _randint(low: int, high: int, n: int, x: Tensor,
             generator: torch.Generator | None) -> Tensor:
    """``n`` integers uniform in ``[low, high)`` on ``x.device``."""
    return torch.randint(low, high, (n,), generator=generator, device=x.device)


def _axis_shape(b: int, ndim: int, axis: int, size: int) -> tuple[int, ...]:
    """Shape ``(B, 1, ..., size, ..., 1)`` with ``size`` at spatial ``axis`` (channel dim = 1)."""
    shape = [b] + [1] * (ndim - 1)
    shape[2 + axis] = size
    return tuple(shape)


def brightness(x: Tensor, image_channels: int, generator: torch.Generator | None) -> Tensor:
    """Add one U(-0.5, 0.5) offset per sample to the image channels; the mask is kept."""
    image, mask = x[:, :image_channels], x[:, image_channels:]
    return torch.cat([image + (_rand(x, generator) - 0.5), mask], dim=1)


def contrast(x: Tensor, image_channels: int, generator: torch.Generator | None) -> Tensor:
    """Scale the image channels around their per-sample mean by U(0.5, 1.5); mask kept."""
    image, mask = x[:, :image_channels], x[:, image_channels:]
    mean = image.mean(dim=tuple(range(1, x.ndim)), keepdim=True)  # (B, 1, *[1] * d)
    image = (image - mean) * (_rand(x, generator) + 0.5) + mean
    return torch.cat([image, mask], dim=1)


def translation(x: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Shift all channels of each sample by an integer in ``[-r, r]`` voxels per axis.

    ``r = round(ratio * size)``. Voxels shifted in from outside are -1. Implemented by padding
    one -1 voxel on each side and gathering with clamped index grids, one per axis.
    """
    b, spatial = x.shape[0], x.shape[2:]
    d = len(spatial)
    padded = torch.nn.functional.pad(x, (1, 1) * d, value=BACKGROUND)  # (B, C, *(spatial + 2))
    index = [torch.arange(b, device=x.device).reshape((b,) + (1,) * d)]  # (B, 1, ..., 1)
    for axis, size in enumerate(spatial):
        r = int(ratio * size + 0.5)
        shift = _randint(-r, r + 1, b, x, generator)  # (B,)
        src = torch.arange(size, device=x.device) - shift[:, None] + 1  # (B, size), padded coords
        src = src.clamp(0, size + 1)  # from outside the patch -> the -1 padding
        index.append(src.reshape((b,) + tuple(size if a == axis else 1 for a in range(d))))
    out = padded.movedim(1, -1)[tuple(index)]  # (B, *spatial, C)
    return out.movedim(-1, 1)


def cutout(x: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Set one random box of ``round(ratio * size)`` voxels per axis to -1 in all channels.

    The box centre is uniform over the patch, so boxes may be clipped at the border.
    """
    b, ndim = x.shape[0], x.ndim
    inside = torch.ones((b,) + (1,) * (ndim - 1), dtype=torch.bool, device=x.device)
    for axis, size in enumerate(x.shape[2:]):
        cut = int(ratio * size + 0.5)
        start = _randint(0, size, b, x, generator) - cut // 2  # (B,)
        pos = torch.arange(size, device=x.device)
        hit = (pos >= start[:, None]) & (pos < start[:, None] + cut)  # (B, size)
        inside = inside & hit.reshape(_axis_shape(b, ndim, axis, size))
    return x.masked_fill(inside, BACKGROUND)  # inside: (B, 1, *spatial)


def diff_augment(x: Tensor, policy: Sequence[str], image_channels: int,
                 generator: torch.Generator | None = None, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5) -> Tensor:
    """Apply the policies in order to ``x (B, image_channels + 1, *spatial)``; same shape out.

    ``policy`` is a sequence of names from :data:`DIFFAUGMENT_POLICIES` (a comma-separated
    string works too); empty returns ``x`` itself. Every draw is per sample and comes from
    ``generator`` (on ``x.device``) when given, so a seeded generator reproduces the output.
    """
    names = [p.strip() for p in policy.split(",") if p.strip()] if isinstance(policy, str) \
        else list(policy)
    unknown = [p for p in names if p not in DIFFAUGMENT_POLICIES]
    if unknown:
        raise ConfigError(f"diffaugment policy must be one of "
                          f"{', '.join(DIFFAUGMENT_POLICIES)}, not {unknown[0]!r}")
    for name, value in (("translation_ratio", translation_ratio), ("cutout_ratio", cutout_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], not {value!r}")
    if x.ndim < 3 or x.shape[1] != image_channels + 1:
        raise ValueError(f"x must be (B, image_channels + 1, *spatial) with image_channels="
                         f"{image_channels}, not {tuple(x.shape)}")
    for name in names:
        if name == "brightness":
            x = brightness(x, image_channels, generator)
        elif name == "contrast":
            x = contrast(x, image_channels, generator)
        elif name == "translation":
            x = translation(x, translation_ratio, generator)
        else:
            x = cutout(x, cutout_ratio, generator)
    return x
