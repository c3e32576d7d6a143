"""Insert a lesion by inpainting it into real tissue: ``RandLesionInpaint(d)``.

With probability ``prob`` the transform

1. draws a lesion shape from a mask source (:mod:`medgan.augment.masks`);
2. places it (:func:`medgan.augment.placement.place_mask`): wholly inside the tissue region,
   at least ``margin_mm`` from every existing lesion, at an offset drawn among all that fit;
3. cuts the inpainter's patch around it, maps it to model space, erases ``E`` (the mask dilated
   by the generator's ``erase_margin``, minus existing lesion voxels) and lets the generator
   restore ``E`` with a lesion shaped like the mask;
4. writes back only the voxels of ``E`` (mapped back to image units, hence within the mapping's
   intensity range); every other voxel is untouched, bit for bit;
5. sets ``label = label OR mask`` (``lesion_value`` on the mask; no overlap by construction).

With ``generator_spacing_mm`` (the spacing the generator was trained at) and an image of another
spacing, the lesion keeps its size in mm: the mask is drawn at the generator's spacing and
scaled to the image's grid before it is placed, the patch around it covers the generator's
field of view in mm, and it is resampled (linear) to the generator's grid and the result back;
the label gets the scaled mask exactly, and only the voxels of ``E`` (scaled to the image's grid,
always covering the mask) are written.

When a step cannot be done the data are returned unchanged and the reason is counted in
``transform.skipped`` (a :class:`collections.Counter`, per process: each ``DataLoader`` worker
counts its own). The generator is a checkpoint of ``model.kind: inpaint`` (its path or
:class:`~medgan.sampling.inpainter.LoadedInpainter`, whose intensity mapping is then the
default) or an :class:`~medgan.models.inpaint.InpaintGenerator` in memory. After an insertion,
``transform.last`` describes it (:class:`Insertion`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.utils import TransformBackends

from medgan.augment.arrays import Array, resize_linear, spacing_factors, to_numpy, write_window
from medgan.augment.dict_base import RandArrayTwind, RandLesionArray, check_prob
from medgan.augment.masks import MaskSource, rescale_mask
from medgan.augment.placement import PlacementSettings, place_mask, tissue_region
from medgan.data.intensity import IntensityMapping
from medgan.errors import ConfigError
from medgan.models.inpaint import InpaintGenerator, erase_region
from medgan.sampling.inpainter import LoadedInpainter

Inpainter = InpaintGenerator | LoadedInpainter | str | Path


@dataclass(frozen=True)
class Insertion:
    """One inserted lesion: ``seeds`` (mask shape, placement, noise), ``offset`` (voxel index of
    the tight ``mask``'s first corner in the image), ``window`` (the generator patch, a tuple of
    slices and, for a 2D generator in a 3D image, the slice index) and ``erase`` (the voxels
    written, boolean ``(*P)`` in that window)."""

    seeds: tuple[int, int, int]
    offset: tuple[int, ...]
    mask: np.ndarray
    window: tuple
    erase: np.ndarray


def resolve_inpainter(generator: Inpainter, intensity: IntensityMapping | None
                      ) -> tuple[InpaintGenerator, IntensityMapping | None]:
    """The network and intensity mapping of ``generator``: a checkpoint path or
    :class:`LoadedInpainter` brings its own mapping (unless ``intensity`` is given)."""
    if isinstance(generator, str | Path):
        from medgan.sampling.loader import load_generator

        generator = load_generator(generator, kind="inpaint")
    if isinstance(generator, LoadedInpainter):
        return generator.generator, intensity if intensity is not None else generator.intensity
    if not isinstance(generator, InpaintGenerator):
        raise ConfigError(f"generator must be an inpainting checkpoint (path or LoadedInpainter) "
                          f"or an InpaintGenerator, not {type(generator).__name__}")
    return generator, intensity


class RandLesionInpaint(RandLesionArray):
    """Array transform: ``(image, label) -> (image, label)`` with one lesion inpainted.

    Args:
        generator: an inpainting checkpoint (path or
            :class:`~medgan.sampling.inpainter.LoadedInpainter`) or a trained
            :class:`~medgan.models.inpaint.InpaintGenerator` (used in eval mode, on its own
            device).
        mask_source: where lesion shapes come from (:mod:`medgan.augment.masks`).
        intensity: the mapping image units -> model space the generator was trained with; None
            = the checkpoint's, or for a bare network: images already in model space [-1, 1].
        prob: probability of inserting a lesion.
        placement: region and margin settings (:class:`PlacementSettings`).
        spacing_mm: voxel spacing for ``margin_mm``; None reads a MetaTensor's ``pixdim``
            (else 1 mm).
        lesion_value: label value written on the new lesion.
        generator_spacing_mm: the spacing (x, y[, z]) in mm the generator was trained at (a
            :class:`~medgan.sampling.inpainter.LoadedInpainter`'s ``spacing_mm``). When an
            image's spacing differs from it by more than 1 % on an axis the generator works on,
            the lesion is scaled and the patch resampled so that the lesion keeps its size in
            mm (module docstring); a value <= 0 leaves that axis alone. None: work at the
            image's voxel scale (lesion and patch sizes in voxels, whatever the spacing).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, generator: Inpainter, mask_source: MaskSource,
                 intensity: IntensityMapping | None = None, prob: float = 0.5,
                 placement: PlacementSettings | None = None,
                 spacing_mm: Sequence[float] | None = None, lesion_value: int = 1,
                 generator_spacing_mm: Sequence[float] | None = None) -> None:
        generator, intensity = resolve_inpainter(generator, intensity)
        check_prob(prob)
        if mask_source.spatial_dims != generator.spatial_dims:
            raise ConfigError(f"mask_source makes {mask_source.spatial_dims}D masks but the "
                              f"generator is {generator.spatial_dims}D")
        super().__init__(prob)
        self.generator, self.mask_source, self.intensity = generator.eval(), mask_source, intensity
        self.placement = placement or PlacementSettings()
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.lesion_value = lesion_value
        self.generator_spacing_mm = None if generator_spacing_mm is None else \
            tuple(float(s) for s in generator_spacing_mm)
        if self.generator_spacing_mm is not None and \
                len(self.generator_spacing_mm) < generator.spatial_dims:
            raise ConfigError(f"generator_spacing_mm needs {generator.spatial_dims} values, not "
                              f"{list(self.generator_spacing_mm)}")
        self.applied = 0
        self.last: Insertion | None = None
        self._seeds = np.zeros(3, np.int64)

    def randomize(self, data: Any = None) -> None:
        """Draw: apply or not, then three seeds (mask shape, placement, noise)."""
        super().randomize(None)
        self._seeds = self.R.randint(0, 2**31 - 1, size=3)

    def _spacing(self, img: Array) -> tuple[float, ...]:
        if self.spacing_mm is not None:
            return self.spacing_mm
        if isinstance(img, MetaTensor):
            return tuple(float(s) for s in img.pixdim[: img.ndim - 1])
        return (1.0,) * (img.ndim - 1)

    def scale_factors(self, img: Array) -> tuple[float, ...] | None:
        """Image voxels per generator voxel along the generator's axes (generator spacing /
        image spacing), or None when no axis differs by more than 1 % (or no
        ``generator_spacing_mm``)."""
        if self.generator_spacing_mm is None:
            return None
        d = self.generator.spatial_dims
        return spacing_factors(self.generator_spacing_mm[:d], self._spacing(img)[:d])

    def __call__(self, img: Array, label: Array | None = None, region_map: Array | None = None,
                 randomize: bool = True) -> tuple[Array, Array | None]:
        """``img`` ``(C, *S)``, ``label`` ``(1, *S)`` or ``(*S)``, ``region_map`` likewise."""
        self.last = None
        if not self._start(img, randomize):
            return img, label
        g = self.generator
        mask = self.mask_source(np.random.default_rng(int(self._seeds[0])))
        if mask is None or not mask.any():
            return self._skip("mask source gave no mask", img, label)
        if any(s + 2 * g.erase_margin > g.size for s in mask.shape):
            return self._skip("mask larger than patch", img, label)
        spatial = tuple(img.shape[1:])
        factors = self.scale_factors(img)
        size = (g.size,) * g.spatial_dims if factors is None else \
            tuple(max(1, round(g.size * f)) for f in factors)
        if factors is not None:
            mask = rescale_mask(mask.reshape(mask.shape[:g.spatial_dims]), factors)
            if not mask.any():
                return self._skip("mask vanished at the image's spacing", img, label)
        if any(s < p for s, p in zip(spatial, size, strict=False)):
            return self._skip("image smaller than patch", img, label)
        image_np = to_numpy(img)
        occupied = None if label is None else to_numpy(label).reshape(spatial) > 0
        region = tissue_region(image_np, self.placement,
                               None if region_map is None else to_numpy(region_map))
        found = place_mask(mask, region, np.random.default_rng(int(self._seeds[1])), occupied,
                           self._spacing(img), self.placement.margin_mm)
        if not found.ok:
            return self._skip(str(found.reason), img, label)
        self.applied += 1
        return self._inpaint(img, label, image_np, mask, found.offset, occupied, size)

    def _window(self, mask: np.ndarray, offset: tuple[int, ...], spatial: tuple[int, ...],
                size: tuple[int, ...]) -> tuple[tuple, tuple[int, ...]]:
        """Spatial window (``size`` image voxels per generator axis) of the generator patch
        around the placed mask, and the mask's offset inside it."""
        d = self.generator.spatial_dims
        starts = [min(max(o + m // 2 - p // 2, 0), n - p)
                  for o, m, n, p in zip(offset[:d], mask.shape[:d], spatial[:d], size,
                                        strict=True)]
        window: tuple = tuple(slice(s, s + p) for s, p in zip(starts, size, strict=True))
        if len(spatial) > d:  # 2D generator, 3D image: the mask's axial slice
            window = (*window, int(offset[-1]))
        return window, tuple(o - s for o, s in zip(offset[:d], starts, strict=True))

    @torch.no_grad()
    def _inpaint(self, img: Array, label: Array | None, image_np: np.ndarray, mask: np.ndarray,
                 offset: tuple[int, ...], occupied: np.ndarray | None, size: tuple[int, ...]
                 ) -> tuple[Array, Array | None]:
        g = self.generator
        window, inner = self._window(mask, offset, tuple(img.shape[1:]), size)
        sub = (slice(None), *window)
        real = image_np[sub].astype(np.float64)  # (C, *W), image units
        m = np.zeros(real.shape[1:], bool)
        m[tuple(slice(o, o + s) for o, s in zip(inner, mask.shape, strict=False))] = \
            mask.reshape(mask.shape[:g.spatial_dims])
        device = next(g.parameters()).device
        x = torch.as_tensor(real, dtype=torch.float32)
        x = x if self.intensity is None else torch.as_tensor(self.intensity.forward(x))
        m_t = torch.from_numpy(m).float()[None, None]
        keep_w = None if occupied is None else \
            torch.from_numpy(~occupied[window]).float()[None, None]  # (1, 1, *W)
        keep = keep_w
        grid = (g.size,) * g.spatial_dims
        resample = tuple(real.shape[1:]) != grid
        if resample:  # image grid (W) -> generator grid (P)
            x = resize_linear(x[None], grid)[0]
            m_t = _resize_mask(m_t, grid)
            if keep_w is not None:  # a generator voxel touching an existing lesion is kept
                keep = (resize_linear(1.0 - keep_w, grid) <= 1e-6).float()
        e_t = erase_region(m_t.to(device), g.erase_margin)
        if keep is not None:  # never repaint an existing lesion
            e_t = e_t * keep.to(device)
        noise = g.sample_noise(1, torch.Generator().manual_seed(int(self._seeds[2])), device)
        fill = g(x[None].to(device), m_t.to(device), e_t, noise).float().cpu()  # (1, C, *P)
        erase_t = e_t.cpu()
        if resample:  # back to the image grid; the erase region always covers the mask
            fill = resize_linear(fill, real.shape[1:])
            erase_t = (resize_linear(erase_t, real.shape[1:]) >= 0.5).float()
            erase_t = torch.maximum(erase_t, torch.from_numpy(m).float()[None, None])
            if keep_w is not None:
                erase_t = erase_t * keep_w
        fill = fill[0]  # (C, *W) in [-1, 1]
        fill_units = fill if self.intensity is None else self.intensity.inverse(fill)
        erase = erase_t[0].numpy() > 0.5  # (1, *W)
        values = np.where(erase, to_numpy(fill_units).astype(np.float64), real)
        out = write_window(img, sub, values)
        self.last = Insertion(tuple(int(s) for s in self._seeds), tuple(offset), mask, window,
                              erase[0])
        if label is None:
            return out, None
        lab_sub = sub if label.ndim == img.ndim else window
        lesion = np.where(m, np.maximum(to_numpy(label[lab_sub]), self.lesion_value),
                          to_numpy(label[lab_sub]))
        return out, write_window(label, lab_sub, lesion)


def _resize_mask(mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """A ``{0, 1}`` mask ``(1, 1, *S)`` on another grid: linear interpolation >= 0.5, or the
    nearest voxels when that leaves nothing (a mask thinner than one new voxel)."""
    out = (resize_linear(mask, size) >= 0.5).float()
    if mask.any() and not out.any():
        out = torch.nn.functional.interpolate(mask, size=size, mode="nearest")
    return out


class RandLesionInpaintd(RandArrayTwind):
    """Dictionary twin of :class:`RandLesionInpaint`.

    ``keys`` = ``(image_key, label_key)``; ``region_key`` names a label/organ map for
    ``placement.region == "key"``. One draw per call, applied to image and label together.
    """

    backend = RandLesionInpaint.backend

    def __init__(self, keys: KeysCollection = ("image", "label"), *,
                 generator: Inpainter, mask_source: MaskSource,
                 intensity: IntensityMapping | None = None, prob: float = 0.5,
                 placement: PlacementSettings | None = None, region_key: str | None = None,
                 spacing_mm: Sequence[float] | None = None, lesion_value: int = 1,
                 generator_spacing_mm: Sequence[float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        if len(self.keys) != 2:
            raise ConfigError(f"keys must be (image_key, label_key), not {list(self.keys)}")
        placement = placement or PlacementSettings()
        if placement.region == "key" and region_key is None:
            raise ConfigError("region_key must name the region map when placement.region is "
                              "'key'")
        self.region_key = region_key
        self.inpaint = self.array_transform = RandLesionInpaint(
            generator, mask_source, intensity, 1.0, placement, spacing_mm, lesion_value,
            generator_spacing_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        image_key, label_key = self.keys
        wanted = (image_key, label_key, self.region_key)
        missing = [k for k in wanted if k is not None and k not in d]
        if missing:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"key {missing[0]!r} is not in the data (keys: {list(d)})")
        if not self._do_transform:
            return d
        self.inpaint.randomize(None)
        region = d[self.region_key] if self.region_key is not None else None
        d[image_key], d[label_key] = self.inpaint(d[image_key], d[label_key], region_map=region,
                                                  randomize=False)
        return d
