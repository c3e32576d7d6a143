"""Where lesion shapes come from: real masks, parametric ellipsoids, or a trained GAN's mask.

Every source is a callable ``source(rng) -> mask`` that returns a *tight* boolean mask (cropped
to its bounding box, ``(*extent)`` with ``spatial_dims`` axes) or None when it has none to give,
with the reason in ``source.last_skip``. All randomness comes from the ``numpy.random.Generator``
passed in, so a source is reproducible from a seed: ``source(np.random.default_rng(seed))``.

Deformations (scaling, rotation, a smooth elastic displacement) are done in millimetres, so
anisotropic voxels keep the lesion's physical shape. Sources hold only arrays and settings and
pickle cleanly into ``DataLoader`` workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, map_coordinates

from medgan.augment.arrays import resize_linear
from medgan.errors import ConfigError, DataError
from medgan.sampling.loader import LoadedGenerator
from medgan.sampling.postprocess import MaskPostprocess


class MaskSource(Protocol):
    """``source(rng)`` -> tight boolean mask ``(*extent)`` or None (reason in ``last_skip``)."""

    spatial_dims: int
    last_skip: str | None

    def __call__(self, rng: np.random.Generator) -> np.ndarray | None: ...


def tight(mask: np.ndarray) -> np.ndarray:
    """``mask`` cropped to the bounding box of its True voxels (unchanged when empty)."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return mask
    lo, hi = idx.min(0), idx.max(0) + 1
    return mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]


def rescale_mask(mask: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Tight ``mask`` ``(*m)`` on a grid ``factors`` times finer per axis (``factors[i]`` new
    voxels per old voxel, e.g. old spacing / new spacing): linear interpolation of the mask,
    thresholded at 0.5, cropped tight (empty when nothing reaches 0.5)."""
    if len(factors) != mask.ndim:
        raise ConfigError(f"factors must have one value per mask axis ({mask.ndim}), "
                          f"not {list(factors)}")
    size = tuple(max(1, round(n * f)) for n, f in zip(mask.shape, factors, strict=True))
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return tight(resize_linear(t, size)[0, 0].numpy() >= 0.5)


def equivalent_diameter_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Diameter of the disc (2D) or ball (3D) with the mask's area / volume, in mm."""
    d = mask.ndim
    size = float(mask.sum()) * float(np.prod(spacing_mm[:d]))
    return 2.0 * np.sqrt(size / np.pi) if d == 2 else 2.0 * (3.0 * size / (4.0 * np.pi)) ** (1 / 3)


def _rotation(d: int, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Random rotation matrix ``(d, d)``: up to ``max_deg`` about each axis (in-plane in 2D)."""
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 1 if d == 2 else 3))
    if d == 2:
        c, s = np.cos(a[0]), np.sin(a[0])
        return np.array([[c, -s], [s, c]])
    rot = np.eye(3)
    for axis, angle in enumerate(a):
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(angle)
        r[i, j], r[j, i] = -np.sin(angle), np.sin(angle)
        rot = rot @ r
    return rot


def deform(mask: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator,
           scale: float = 1.0, rotate_deg: float = 180.0, elastic_mm: float = 1.0,
           elastic_sigma_mm: float = 4.0) -> np.ndarray:
    """Scaled, rotated and elastically displaced copy of a boolean ``mask``; tight.

    Draws: rotation angles, then a ``d``-component Gaussian noise field smoothed with
    ``elastic_sigma_mm`` and scaled to a largest displacement of ``elastic_mm``.
    """
    d = mask.ndim
    sp = np.asarray(spacing_mm[:d], float)
    pad = int(np.ceil(max(mask.shape) * (max(scale, 1.0) * np.sqrt(d) - 1) / 2
                      + elastic_mm / sp.min())) + 2
    src = np.pad(mask.astype(np.float32), pad)
    rot = _rotation(d, rng, rotate_deg)
    shape = src.shape
    centre = (np.asarray(shape, float) - 1) / 2 * sp  # mm
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    q = grid.reshape(d, -1) * sp[:, None] - centre[:, None]  # output positions, mm
    source_mm = rot.T @ q / scale + centre[:, None]
    field = rng.standard_normal((d, *shape))
    if elastic_mm > 0:
        field = np.stack([gaussian_filter(f, elastic_sigma_mm / sp) for f in field])
        field *= elastic_mm / max(np.abs(field).max(), 1e-12)
        source_mm += field.reshape(d, -1)
    coords = (source_mm / sp[:, None]).reshape(d, *shape)
    return tight(map_coordinates(src, coords, order=1, cval=0.0) > 0.5)


def _check_spacing(spacing_mm: Sequence[float], d: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) < d or any(not s > 0 for s in sp):
        raise ConfigError(f"spacing_mm must hold {d} positive numbers (mm), not {spacing_mm!r}")
    return sp[:d]


def _check_range(name: str, value: tuple[float, float], low: float = 0.0) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    if not low < a <= b:
        raise ConfigError(f"{name} must be (low, high) with {low} < low <= high, not {value!r}")
    return a, b


def _as_masks(masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
              spatial_dims: int) -> list[np.ndarray]:
    """Non-empty boolean masks ``(*P)`` from a list, ``(N, *P)`` or ``(N, 1, *P)`` array."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    out = []
    for m in masks:
        m = np.asarray(m)
        if m.ndim == spatial_dims + 1 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != spatial_dims:
            raise DataError(f"masks must have {spatial_dims} spatial axes (optionally one channel "
                            f"axis of 1), not shape {m.shape}")
        if m.any():
            out.append(tight(m > 0))
    if not out:
        raise DataError("masks holds no non-empty mask to draw lesion shapes from")
    return out


class RealMaskSource:
    """Real training masks, each drawn uniformly then scaled, rotated and elastically deformed.

    Args:
        masks: ``(N, *P)``, ``(N, 1, *P)`` or a list of ``(*P)`` arrays (non-zero = lesion);
            empty ones are dropped.
        spatial_dims: 2 or 3.
        spacing_mm: voxel spacing of the masks (and of the images they go into).
        scale_range: isotropic scale factor drawn log-uniformly from this range.
        rotate_deg: largest rotation angle about each axis.
        elastic_mm: largest elastic displacement in mm (0 = none).
    """

    def __init__(self, masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor, spatial_dims: int,
                 spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                 scale_range: tuple[float, float] = (0.8, 1.25), rotate_deg: float = 180.0,
                 elastic_mm: float = 1.0) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, not {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.masks = _as_masks(masks, spatial_dims)
        self.spacing_mm = _check_spacing(spacing_mm, spatial_dims)
        self.scale_range = _check_range("scale_range", scale_range)
        self.rotate_deg, self.elastic_mm = float(rotate_deg), float(elastic_mm)
        self.last_skip: str | None = None

    def __call__(self, rng: np.random.Generator) -> np.ndarray | None:
        """Draws: mask index, scale, then :func:`deform`'s draws."""
        pick = self.masks[int(rng.integers(len(self.masks)))]
        scale = float(np.exp(rng.uniform(*np.log(self.scale_range))))
        out = deform(pick, self.spacing_mm, rng, scale, self.rotate_deg, self.elastic_mm)
        self.last_skip = None if out.any() else "mask vanished under deformation"
        return out if out.any() else None


class EllipsoidMaskSource:
    """Ellipsoids (ellipses in 2D) with an elastic deformation, sized in mm.

    The equivalent diameter is drawn from ``diameters_mm`` (e.g. the training masks', see
    :meth:`from_masks`) times a log-uniform ``jitter``; the semi-axes get ratios drawn from
    ``axis_ratio`` (volume preserved), then the shape is rotated and deformed.
    """

    def __init__(self, spatial_dims: int, diameters_mm: Sequence[float],
                 spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                 axis_ratio: tuple[float, float] = (0.6, 1.0),
                 jitter: tuple[float, float] = (0.9, 1.1), elastic_mm: float = 1.0) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, not {spatial_dims!r}")
        diam = [float(x) for x in diameters_mm]
        if not diam or any(not x > 0 for x in diam):
            raise ConfigError(f"diameters_mm must be a non-empty list of positive sizes in mm, "
                              f"not {list(diameters_mm)!r}")
        self.spatial_dims, self.diameters_mm = spatial_dims, diam
        self.spacing_mm = _check_spacing(spacing_mm, spatial_dims)
        self.axis_ratio = _check_range("axis_ratio", axis_ratio)
        self.jitter = _check_range("jitter", jitter)
        self.elastic_mm = float(elastic_mm)
        self.last_skip: str | None = None

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
                   spatial_dims: int, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                   **kwargs: object) -> EllipsoidMaskSource:
        """Sizes from the equivalent diameters of real masks (same layouts as
        :class:`RealMaskSource`)."""
        sp = _check_spacing(spacing_mm, spatial_dims)
        diam = [equivalent_diameter_mm(m, sp) for m in _as_masks(masks, spatial_dims)]
        return cls(spatial_dims, diam, sp, **kwargs)  # type: ignore[arg-type]

    def __call__(self, rng: np.random.Generator) -> np.ndarray | None:
        """Draws: diameter index, jitter, axis ratios, then :func:`deform`'s draws."""
        d = self.spatial_dims
        diameter = self.diameters_mm[int(rng.integers(len(self.diameters_mm)))]
        diameter *= float(np.exp(rng.uniform(*np.log(self.jitter))))
        ratios = rng.uniform(*self.axis_ratio, d)
        semi = diameter / 2 * ratios / np.prod(ratios) ** (1 / d)  # mm, volume preserved
        sp = np.asarray(self.spacing_mm)
        half = np.ceil(semi.max() / sp).astype(int) + 1
        grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
        ell = sum((g * s / a) ** 2 for g, s, a in zip(grid, sp, semi, strict=True)) <= 1.0
        out = deform(ell, self.spacing_mm, rng, 1.0, 180.0, self.elastic_mm)
        self.last_skip = None if out.any() else "ellipsoid smaller than one voxel"
        return out if out.any() else None


class CheckpointMaskSource:
    """The mask channel of an unconditional medgan generator (see ``load_generator``).

    Up to ``max_draws`` latents are drawn (seeds from ``rng``); the first mask that is non-empty
    after ``postprocess`` and does not touch the patch border (a cut-off lesion) is returned.
    """

    def __init__(self, generator: LoadedGenerator, postprocess: MaskPostprocess | None = None,
                 max_draws: int = 4) -> None:
        if max_draws < 1:
            raise ConfigError(f"max_draws must be a positive integer, not {max_draws!r}")
        self.generator, self.max_draws = generator, int(max_draws)
        self.spatial_dims = generator.spatial_dims
        self.postprocess = postprocess or MaskPostprocess(keep_largest=True)
        self.last_skip: str | None = None

    def __call__(self, rng: np.random.Generator) -> np.ndarray | None:
        """Draws: ``max_draws`` seeds up front (always the same number)."""
        seeds = rng.integers(0, 2**53, self.max_draws)
        self.last_skip = "generated mask empty"
        for seed in seeds:
            pair = self.generator.generate(1, seed=int(seed))[0]  # (C + 1, *P)
            mask = self.postprocess(pair[-1]).astype(bool)
            if not mask.any():
                continue
            if touches_border(mask):
                self.last_skip = "generated mask touches the patch border"
                continue
            self.last_skip = None
            return tight(mask)
        return None


def touches_border(mask: np.ndarray) -> bool:
    """True when any True voxel lies on a face of the array."""
    return any(np.take(mask, [0, -1], axis=a).any() for a in range(mask.ndim))
