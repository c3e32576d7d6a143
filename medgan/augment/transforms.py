"""Paste a generated lesion into a real image and its label: ``RandSyntheticLesion(d)``.

With probability ``prob`` the transform

1. generates one image + mask pair from a latent vector drawn from ``self.R``; a mask that is
   empty after post-processing or touches the generated patch's border (a cut-off lesion that
   would leave a straight seam) is rejected and the next of ``num_attempts`` latents is tried;
2. places the lesion with :func:`medgan.augment.placement.place_mask`: the whole mask inside the
   allowed region (the ``foreground`` mask if given, else the body, see :func:`body_region`,
   else the whole image with ``allow_outside_body``) and at least ``margin_mm`` from every
   existing lesion (label > 0), at an offset drawn among *all* offsets that fit, so any lesion
   that fits somewhere is placed; when none fits the data are returned unchanged;
3. maps the generated patch to the image's units with the generator's own intensity mapping
   (``units="physical"``) or leaves it in [-1, 1] (``units="model"``), and shifts it by one
   offset per channel so that the ring around the lesion has the real ring's mean: the lesion's
   contrast is the one the GAN learnt, never rescaled; values are clipped to the mapping's range;
4. blends it in with a soft weight ``w = clip(2 * gaussian(mask, blend_sigma), 0, 1)`` (1 on
   the lesion, fading to 0 over about two ``blend_sigma`` voxels outside it; 0 on existing
   lesions);
5. writes ``label = max(label, lesion_value * mask)``.

Every unchanged call counts its reason in ``transform.skipped``.

Images are channel-first ``(C, X, Y[, Z])`` in the voxel orientation the generator was trained
on (RAS after ``Orientationd``) and ideally at its ``spacing_mm``: the patch is not resampled.
A 2D generator on a 3D volume inserts the lesion into one axial slice.
NumPy arrays and torch tensors (CPU or GPU, MetaTensor included) keep their type, device and
dtype; the region search and blending run on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.utils import TransformBackends
from scipy.ndimage import binary_dilation, gaussian_filter

from medgan.augment.arrays import Array, body_region, to_numpy, write_window
from medgan.augment.dict_base import RandArrayTwind, RandLesionArray, check_prob
from medgan.augment.masks import tight, touches_border
from medgan.augment.placement import place_mask
from medgan.errors import ConfigError, DataError
from medgan.sampling.loader import LoadedGenerator, load_generator
from medgan.sampling.postprocess import MaskPostprocess

log = logging.getLogger(__name__)

UNITS = ("physical", "model")  # image units of RandSyntheticLesion


def _blend_weight(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if sigma <= 0:
        return m
    return np.maximum(np.clip(2.0 * gaussian_filter(m, sigma), 0.0, 1.0), m)


def _offset_intensity(generated: np.ndarray, real: np.ndarray, mask: np.ndarray,
                      region: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Shift each generated channel so the lesion's surroundings have ``real``'s mean; clip.

    ``generated``/``real`` ``(C, *P)`` in image units, ``mask``/``region`` ``(*P)`` bool,
    ``low``/``high`` ``(C,)`` the valid intensity range. Contrast is never rescaled.
    """
    radius = max(3, mask.shape[0] // 8)
    ring = binary_dilation(mask, iterations=radius) & ~mask
    for candidate in (ring & region, ring, ~mask):
        if candidate.sum() >= 10:
            ring = candidate
            break
    shift = real[:, ring].mean(1) - generated[:, ring].mean(1)  # (C,)
    shape = (-1,) + (1,) * mask.ndim
    return np.clip(generated + shift.reshape(shape), low.reshape(shape), high.reshape(shape))


class RandSyntheticLesion(RandLesionArray):
    """Array transform: ``(image, label) -> (image, label)`` with a generated lesion pasted in.

    Args:
        generator: a :class:`~medgan.sampling.LoadedGenerator` or a checkpoint path (loaded on
            the CPU).
        prob: probability of inserting a lesion.
        lesion_value: label value written where the lesion is.
        blend_sigma: Gaussian sigma of the soft boundary, in voxels (0 = hard paste).
        allow_outside_body: without a foreground mask, allow the lesion anywhere in the image.
        num_attempts: generated lesions tried; one whose mask is empty or touches the patch
            border is replaced by the next.
        postprocess: mask clean-up of the generated lesion (default :class:`MaskPostprocess`).
        units: ``"physical"`` when images are in the generator's physical units (HU, SUV, its
            MR scale), ``"model"`` when they are already in its [-1, 1] model space.
        margin_mm: smallest distance of the new lesion from any existing lesion (label > 0),
            in mm at the generator's ``spacing_mm``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, generator: LoadedGenerator | str | Path, prob: float = 0.5,
                 lesion_value: int = 1, blend_sigma: float = 1.5,
                 allow_outside_body: bool = False, num_attempts: int = 10,
                 postprocess: MaskPostprocess | None = None, units: str = "physical",
                 margin_mm: float = 2.0) -> None:
        check_prob(prob)
        if blend_sigma < 0:
            raise ConfigError(f"blend_sigma must be a non-negative number of voxels, not "
                              f"{blend_sigma}")
        if num_attempts < 1:
            raise ConfigError(f"num_attempts must be a positive integer, not {num_attempts}")
        if units not in UNITS:
            raise ConfigError(f"units must be one of {', '.join(UNITS)}, not {units!r}")
        if margin_mm < 0:
            raise ConfigError(f"margin_mm must be >= 0, not {margin_mm}")
        super().__init__(prob)
        self.generator = (generator if isinstance(generator, LoadedGenerator)
                          else load_generator(generator, kind="dcgan"))
        self.lesion_value = lesion_value
        self.blend_sigma = float(blend_sigma)
        self.allow_outside_body = allow_outside_body
        self.num_attempts = int(num_attempts)
        self.postprocess = postprocess or MaskPostprocess()
        self.units, self.margin_mm = units, float(margin_mm)
        self._z = np.zeros((self.num_attempts, self.generator.latent_dim), np.float32)
        self._place_seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw: apply or not, ``num_attempts`` latent vectors and a placement seed."""
        super().randomize(None)
        if not self._do_transform:
            return
        self._z = self.R.standard_normal(
            (self.num_attempts, self.generator.latent_dim)).astype(np.float32)
        self._place_seed = int(self.R.randint(0, 2**31 - 1))

    def allowed_region(self, img: Array, foreground: Array | None = None) -> np.ndarray:
        """Boolean ``(*S)`` mask of where lesion voxels may go."""
        spatial = tuple(img.shape[1:])
        if foreground is not None:
            fg = to_numpy(foreground)
            fg = fg[0] if fg.ndim == len(spatial) + 1 else fg
            if fg.shape != spatial:
                raise DataError(f"foreground mask shape {tuple(fg.shape)} does not match the "
                                f"image's spatial shape {spatial}")
            return fg > 0
        if self.allow_outside_body:
            return np.ones(spatial, dtype=bool)
        return body_region(img)

    def _generate(self) -> tuple[np.ndarray, np.ndarray] | None:
        """First usable ``(image channels (C, *P), mask (*P))`` of the drawn latents."""
        for z in self._z:
            pair = self.generator.decode(torch.from_numpy(z)[None], chunk=1)[0]  # (C + 1, *P)
            mask = self.postprocess(pair[-1]).astype(bool)
            if mask.any() and not touches_border(mask):
                return pair[:-1].numpy(), mask
        return None

    def __call__(self, img: Array, label: Array | None = None, foreground: Array | None = None,
                 randomize: bool = True) -> tuple[Array, Array | None]:
        """``img`` ``(C, *S)``, ``label`` ``(1, *S)`` or ``(*S)``, ``foreground`` likewise."""
        if not self._start(img, randomize):
            return img, label
        g = self.generator
        if any(s < g.patch_size for s in img.shape[1:g.spatial_dims + 1]):
            return self._skip("image smaller than patch", img, label)
        generated = self._generate()
        if generated is None:
            return self._skip("generated mask empty or touching the patch border", img, label)
        pair, mask = generated
        spatial = tuple(img.shape[1:])
        occupied = None if label is None else to_numpy(label).reshape(spatial) > 0
        lo = np.argwhere(mask).min(0)
        region = self.allowed_region(img, foreground)
        found = place_mask(tight(mask), region, np.random.default_rng(self._place_seed),
                           occupied, self.generator.spacing_mm, self.margin_mm)
        if not found.ok:
            return self._skip(str(found.reason), img, label)
        return self._paste(img, label, pair, mask, found.offset, lo, region, occupied)

    def _paste(self, img: Array, label: Array | None, generated: np.ndarray, mask: np.ndarray,
               offset: tuple[int, ...], lo: np.ndarray, region: np.ndarray,
               occupied: np.ndarray | None) -> tuple[Array, Array | None]:
        d, spatial = mask.ndim, tuple(img.shape[1:])
        origin = [o - a for o, a in zip(offset[:d], lo, strict=True)]  # patch corner in image
        src = tuple(slice(max(-o, 0), min(p, n - o)) for o, p, n in
                    zip(origin, mask.shape, spatial[:d], strict=False))
        window: tuple = tuple(slice(o + s.start, o + s.stop) for o, s in
                              zip(origin, src, strict=True))
        if len(spatial) > d:  # 2D lesion into one axial slice
            window = (*window, int(offset[-1]))
        sub = (slice(None), *window)
        real = to_numpy(img[sub]).astype(np.float64)  # (C, *window)
        gen, mask = generated[(slice(None), *src)].astype(np.float64), mask[src]
        if self.units == "physical":
            gen = np.asarray(self.generator.intensity.inverse(gen), np.float64)
            low = np.asarray(self.generator.intensity.low, np.float64)
            high = np.asarray(self.generator.intensity.high, np.float64)
        else:
            low, high = -np.ones(len(gen)), np.ones(len(gen))
        mapped = _offset_intensity(gen, real, mask, region[window], low, high)
        w = _blend_weight(mask, self.blend_sigma)
        if occupied is not None:
            w = np.where(occupied[window], 0.0, w)  # existing lesions keep their voxels
        out = write_window(img, sub, (1.0 - w[None]) * real + w[None] * mapped)
        if label is None:
            return out, None
        lab_sub = sub if label.ndim == img.ndim else window
        lesion = np.maximum(to_numpy(label[lab_sub]), self.lesion_value * mask)
        return out, write_window(label, lab_sub, lesion)


class RandSyntheticLesiond(RandArrayTwind):
    """Dictionary twin of :class:`RandSyntheticLesion`.

    ``keys`` = ``(image_key, label_key)`` (or just ``(image_key,)``: no label is written);
    ``foreground_key`` names an optional mask of the allowed region (e.g. an organ or body
    mask). One draw (apply or not, latents, placement) is made per call and applied to the pair.
    """

    backend = RandSyntheticLesion.backend

    def __init__(self, keys: KeysCollection = ("image", "label"), *,
                 generator: LoadedGenerator | str | Path, prob: float = 0.5,
                 foreground_key: str | None = None, lesion_value: int = 1,
                 blend_sigma: float = 1.5, allow_outside_body: bool = False,
                 num_attempts: int = 10, postprocess: MaskPostprocess | None = None,
                 units: str = "physical", margin_mm: float = 2.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        if len(self.keys) not in (1, 2):
            raise ConfigError(f"keys must be (image_key,) or (image_key, label_key), not "
                              f"{list(self.keys)}")
        self.foreground_key = foreground_key
        self.lesion = self.array_transform = RandSyntheticLesion(
            generator, 1.0, lesion_value, blend_sigma, allow_outside_body, num_attempts,
            postprocess, units, margin_mm)



    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        image_key, label_key = self.keys[0], (self.keys[1] if len(self.keys) > 1 else None)
        if image_key not in d or (label_key is not None and label_key not in d):
            if self.allow_missing_keys:
                return d
            missing = image_key if image_key not in d else label_key
            raise KeyError(f"key {missing!r} is not in the data (keys: {list(d)})")
        if not self._do_transform:
            return d
        self.lesion.randomize(None)
        foreground = d[self.foreground_key] if self.foreground_key is not None else None
        image, label = self.lesion(d[image_key], d.get(label_key) if label_key else None,
                                   foreground=foreground, randomize=False)
        d[image_key] = image
        if label_key is not None:
            d[label_key] = label
        return d
