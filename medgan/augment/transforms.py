"""Paste a generated lesion into a real image and its label: ``RandSyntheticLesion(d)``.

With probability ``prob`` the transform

1. generates one image + mask pair from a latent vector drawn from ``self.R``;
2. picks a location such that the whole (post-processed) lesion mask lies inside the allowed
   region: the ``foreground`` mask if given, else the body (see :func:`body_region`), else the
   whole image with ``allow_outside_body``; up to ``num_attempts`` random anchor voxels of the
   region are tried (the lesion's centroid is put on the anchor, the patch kept inside the
   image); when none fits, the data are returned unchanged;
3. maps the generated patch linearly so that its non-lesion surroundings (a ring around the
   lesion) get the mean and standard deviation of the same ring in the real image, whatever
   that image's intensity scale (HU, normalised, MR units);
4. blends it in with a soft weight ``w = clip(2 * gaussian(mask, blend_sigma), 0, 1)`` (1 on
   the lesion, fading to 0 over about two ``blend_sigma`` voxels outside it);
5. writes ``label = max(label, lesion_value * mask)``.

Images are channel-first ``(C, X, Y[, Z])`` in the voxel orientation the generator was trained
on (RAS after ``Orientationd``) and ideally at its ``spacing_mm``: the patch is not resampled.
A 2D generator on a 3D volume inserts the lesion into one axial slice (the anchor's ``Z``).
NumPy arrays and torch tensors (CPU or GPU, MetaTensor included) keep their type, device and
dtype; the region search and blending run on the CPU on the patch only.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends
from scipy.ndimage import binary_dilation, binary_fill_holes, gaussian_filter

from medgan.errors import ConfigError, DataError
from medgan.sampling.loader import LoadedGenerator, load_generator
from medgan.sampling.postprocess import MaskPostprocess

log = logging.getLogger(__name__)
Array = np.ndarray | torch.Tensor

BODY_PERCENTILES = (1.0, 99.0)
BODY_FRACTION = 0.05  # body = above p1 + 5% of (p99 - p1)
# Standard deviations below these floors are raised to them when matching intensities, so a
# featureless (noise-free) surrounding neither erases nor explodes the lesion's contrast.
SD_FLOOR_MODEL = 0.02  # model units ([-1, 1])
SD_FLOOR_REAL = 0.005  # fraction of the real image's p1..p99 range
MAX_STAT_VOXELS = 1_000_000  # percentiles of larger images use a strided subsample


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _range(channel: Array) -> tuple[float, float]:
    """(p1, p99) of one channel, from at most ~1M voxels."""
    flat = _numpy(channel).reshape(-1)
    step = max(1, flat.size // MAX_STAT_VOXELS)
    lo, hi = np.percentile(flat[::step].astype(np.float64), BODY_PERCENTILES)
    return float(lo), float(hi)


def body_region(image: Array) -> np.ndarray:
    """Boolean "inside the body" mask ``(*S)`` of a channel-first image ``(C, *S)``.

    Channel 0 above ``p1 + 0.05 * (p99 - p1)`` (air / background sit at or near p1 in CT, MR
    and PET alike), then holes filled per axial slice (last axis) for 3D, or in the plane for
    2D, so dark structures enclosed by the body (fat, gas, lung) still count as inside.
    """
    channel = _numpy(image[0]).astype(np.float32, copy=False)
    lo, hi = _range(channel)
    body = channel > lo + BODY_FRACTION * (hi - lo)
    if body.ndim == 2:
        return binary_fill_holes(body)
    for z in range(body.shape[-1]):
        body[..., z] = binary_fill_holes(body[..., z])
    return body


def _blend_weight(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if sigma <= 0:
        return m
    return np.maximum(np.clip(2.0 * gaussian_filter(m, sigma), 0.0, 1.0), m)


def _match_intensity(generated: np.ndarray, real: np.ndarray, mask: np.ndarray,
                     region: np.ndarray, floor_real: np.ndarray) -> np.ndarray:
    """Linearly map each generated channel so the lesion's surroundings match ``real``.

    ``generated``/``real`` ``(C, *P)``, ``mask``/``region`` ``(*P)`` bool, ``floor_real`` (C,).
    """
    radius = max(3, mask.shape[0] // 8)
    ring = binary_dilation(mask, iterations=radius) & ~mask
    for candidate in (ring & region, ring, ~mask):
        if candidate.sum() >= 10:
            ring = candidate
            break
    out = np.empty_like(generated, dtype=np.float64)
    for c in range(generated.shape[0]):
        g, r = generated[c][ring].astype(np.float64), real[c][ring].astype(np.float64)
        scale = max(r.std(), floor_real[c]) / max(g.std(), SD_FLOOR_MODEL)
        out[c] = (generated[c] - g.mean()) * scale + r.mean()
    return out


def _write(dst: Array, window: tuple, values: np.ndarray) -> Array:
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


class RandSyntheticLesion(RandomizableTransform):
    """Array transform: ``(image, label) -> (image, label)`` with a generated lesion pasted in.

    Args:
        generator: a :class:`~medgan.sampling.LoadedGenerator` or a checkpoint path (loaded on
            the CPU).
        prob: probability of inserting a lesion.
        lesion_value: label value written where the lesion is.
        blend_sigma: Gaussian sigma of the soft boundary, in voxels (0 = hard paste).
        allow_outside_body: without a foreground mask, allow the lesion anywhere in the image.
        num_attempts: random anchor voxels tried before giving up (data unchanged).
        postprocess: mask clean-up of the generated lesion (default :class:`MaskPostprocess`).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, generator: LoadedGenerator | str | Path, prob: float = 0.5,
                 lesion_value: int = 1, blend_sigma: float = 1.5,
                 allow_outside_body: bool = False, num_attempts: int = 10,
                 postprocess: MaskPostprocess | None = None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"prob must be a number in [0, 1], not {prob}")
        if blend_sigma < 0:
            raise ConfigError(f"blend_sigma must be a non-negative number of voxels, not "
                              f"{blend_sigma}")
        if num_attempts < 1:
            raise ConfigError(f"num_attempts must be a positive integer, not {num_attempts}")
        RandomizableTransform.__init__(self, prob)
        self.generator = (generator if isinstance(generator, LoadedGenerator)
                          else load_generator(generator))
        self.lesion_value = lesion_value
        self.blend_sigma = float(blend_sigma)
        self.allow_outside_body = allow_outside_body
        self.num_attempts = int(num_attempts)
        self.postprocess = postprocess or MaskPostprocess()
        self._z = np.zeros(self.generator.latent_dim, np.float32)
        self._anchors = np.zeros(self.num_attempts)

    def randomize(self, data: Any = None) -> None:
        """Draw: apply or not, the latent vector, and ``num_attempts`` anchor positions."""
        super().randomize(None)
        if not self._do_transform:
            return
        self._z = self.R.standard_normal(self.generator.latent_dim).astype(np.float32)
        self._anchors = self.R.random_sample(self.num_attempts)  # fractions of the region

    def _check(self, img: Array) -> None:
        g = self.generator
        dims = img.ndim - 1
        if not (dims == g.spatial_dims or (g.spatial_dims == 2 and dims == 3)):
            raise DataError(f"image must be channel-first with {g.spatial_dims} spatial "
                            f"dimensions for this {g.spatial_dims}D generator, not shape "
                            f"{tuple(img.shape)}")
        if img.shape[0] != g.image_channels:
            raise DataError(f"image has {img.shape[0]} channel(s) but the generator makes "
                            f"{g.image_channels}; pass images with the channels it was "
                            "trained on")

    def allowed_region(self, img: Array, foreground: Array | None = None) -> np.ndarray:
        """Boolean ``(*S)`` mask of where lesion voxels may go."""
        spatial = tuple(img.shape[1:])
        if foreground is not None:
            fg = _numpy(foreground)
            fg = fg[0] if fg.ndim == len(spatial) + 1 else fg
            if fg.shape != spatial:
                raise DataError(f"foreground mask shape {tuple(fg.shape)} does not match the "
                                f"image's spatial shape {spatial}")
            return fg > 0
        if self.allow_outside_body:
            return np.ones(spatial, dtype=bool)
        return body_region(img)

    def _place(self, mask: np.ndarray, region: np.ndarray) -> tuple | None:
        """Spatial window (slices, plus the slice index for 2D-in-3D) or None if nothing fits."""
        flat = np.flatnonzero(region)
        if flat.size == 0:
            return None
        p = mask.shape[0]
        centroid = np.rint(np.argwhere(mask).mean(0)).astype(int)
        picks = flat[np.minimum((self._anchors * flat.size).astype(int), flat.size - 1)]
        for anchor in zip(*np.unravel_index(picks, region.shape), strict=True):
            window: tuple = tuple(
                slice(s, s + p) for s in (
                    int(np.clip(a - c, 0, n - p))
                    for a, c, n in zip(anchor, centroid, region.shape, strict=False)))
            if region.ndim > mask.ndim:  # 2D lesion into the anchor's axial slice
                window = (*window, int(anchor[-1]))
            if region[window][mask].all():
                return window
        return None

    def __call__(self, img: Array, label: Array | None = None, foreground: Array | None = None,
                 randomize: bool = True) -> tuple[Array, Array | None]:
        """``img`` ``(C, *S)``, ``label`` ``(1, *S)`` or ``(*S)``, ``foreground`` likewise."""
        self._check(img)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img, label
        g = self.generator
        if any(s < g.patch_size for s in img.shape[1:g.spatial_dims + 1]):
            log.debug("image %s is smaller than the %d-voxel patch; unchanged",
                      tuple(img.shape), g.patch_size)
            return img, label
        pair = g.decode(torch.from_numpy(self._z)[None], chunk=1)[0]  # (C + 1, *P) in [-1, 1]
        mask = self.postprocess(pair[-1]).astype(bool)
        if not mask.any():
            log.debug("generated mask is empty after post-processing; unchanged")
            return img, label
        region = self.allowed_region(img, foreground)
        window = self._place(mask, region)
        if window is None:
            log.debug("no place for the lesion in %d attempts; unchanged", self.num_attempts)
            return img, label
        return self._paste(img, label, pair[:-1].numpy(), mask, region, window)

    def _paste(self, img: Array, label: Array | None, generated: np.ndarray, mask: np.ndarray,
               region: np.ndarray, window: tuple) -> tuple[Array, Array | None]:
        sub = (slice(None), *window)
        real = _numpy(img[sub]).astype(np.float64)  # (C, *P)
        floor = np.array([SD_FLOOR_REAL * max(hi - lo, 1e-6)
                          for lo, hi in (_range(img[c]) for c in range(img.shape[0]))])
        mapped = _match_intensity(generated, real, mask, region[window], floor)
        w = _blend_weight(mask, self.blend_sigma)[None]
        out = _write(img, sub, (1.0 - w) * real + w * mapped)
        if label is None:
            return out, None
        lab_sub = sub if label.ndim == img.ndim else window
        lesion = np.maximum(_numpy(label[lab_sub]), self.lesion_value * mask)
        return out, _write(label, lab_sub, lesion)


class RandSyntheticLesiond(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`RandSyntheticLesion`.

    ``keys`` = ``(image_key, label_key)`` (or just ``(image_key,)``: no label is written);
    ``foreground_key`` names an optional mask of the allowed region (e.g. an organ or body
    mask). One draw (apply or not, latent, anchors) is made per call and applied to the pair.
    """

    backend = RandSyntheticLesion.backend

    def __init__(self, keys: KeysCollection = ("image", "label"), *,
                 generator: LoadedGenerator | str | Path, prob: float = 0.5,
                 foreground_key: str | None = None, lesion_value: int = 1,
                 blend_sigma: float = 1.5, allow_outside_body: bool = False,
                 num_attempts: int = 10, postprocess: MaskPostprocess | None = None,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) not in (1, 2):
            raise ConfigError(f"keys must be (image_key,) or (image_key, label_key), not "
                              f"{list(self.keys)}")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"prob must be a number in [0, 1], not {prob}")
        RandomizableTransform.__init__(self, prob)
        self.foreground_key = foreground_key
        self.lesion = RandSyntheticLesion(generator, 1.0, lesion_value, blend_sigma,
                                          allow_outside_body, num_attempts, postprocess)

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> RandSyntheticLesiond:
        super().set_random_state(seed, state)
        self.lesion.set_random_state(seed, state)
        return self

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
