"""Mask sources: real masks deformed, sized ellipsoids, a generator's mask channel."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers_blob import blob_generator

from medgan.augment.masks import (
    CheckpointMaskSource,
    EllipsoidMaskSource,
    RealMaskSource,
    deform,
    equivalent_diameter_mm,
    tight,
    touches_border,
)
from medgan.errors import ConfigError, DataError


def _disc(size: int, radius: float, spatial_dims: int = 2) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, size) for _ in range(spatial_dims))]
    return sum((g - size / 2) ** 2 for g in grid) <= radius**2


def _is_tight(m: np.ndarray) -> bool:
    return all(np.take(m, [0, -1], axis=a).any(axis=tuple(b for b in range(m.ndim) if b != a)
                                                  ).all() for a in range(m.ndim))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_real_masks_reproducible_varied_tight(spatial_dims):
    masks = np.stack([_disc(24, 5, spatial_dims), _disc(24, 8, spatial_dims),
                      np.zeros((24,) * spatial_dims, bool)])[:, None]  # (N, 1, *P), one empty
    src = RealMaskSource(torch.from_numpy(masks), spatial_dims, scale_range=(0.8, 1.25))
    assert len(src.masks) == 2
    a, b = src(np.random.default_rng(3)), src(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    draws = [src(np.random.default_rng(s)) for s in range(12)]
    assert len({d.tobytes() + bytes(d.shape) for d in draws}) > 6
    small, large = masks[0, 0].sum(), masks[1, 0].sum()
    for d in draws:
        assert d.ndim == spatial_dims and _is_tight(d)
        assert 0.8 ** spatial_dims * small * 0.6 < d.sum() < 1.25 ** spatial_dims * large * 1.4
    assert pickle.loads(pickle.dumps(src)).masks[0].shape == src.masks[0].shape


def test_empty_and_misshaped_masks_are_refused():
    with pytest.raises(DataError, match="masks holds no non-empty mask"):
        RealMaskSource(np.zeros((3, 16, 16)), 2)
    with pytest.raises(DataError, match="masks must have 3 spatial axes"):
        RealMaskSource(np.ones((2, 16, 16)), 3)
    with pytest.raises(ConfigError, match="scale_range must be"):
        RealMaskSource(np.ones((1, 4, 4)), 2, scale_range=(1.5, 1.0))
    with pytest.raises(ConfigError, match="diameters_mm must be a non-empty list"):
        EllipsoidMaskSource(2, [])
    with pytest.raises(ConfigError, match="spacing_mm must hold 3 positive numbers"):
        EllipsoidMaskSource(3, [5.0], spacing_mm=(1.0, 0.0, 1.0))


def test_deform_scales_area_and_keeps_shape_without_elastic():
    disc = _disc(40, 8)
    same = deform(disc, (1.0, 1.0), np.random.default_rng(0), 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(same, tight(disc))
    double = deform(disc, (1.0, 1.0), np.random.default_rng(0), 2.0, 30.0, 0.0)
    assert abs(double.sum() / disc.sum() - 4.0) < 0.3


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_ellipsoid_sizes_follow_the_training_masks_in_mm(spatial_dims):
    masks = [_disc(40, r, spatial_dims) for r in (4, 6, 8)]
    spacing = (0.5, 0.5, 0.5)  # masks in 0.5 mm voxels: diameters 4, 6, 8 mm
    src = EllipsoidMaskSource.from_masks(masks, spatial_dims, spacing, elastic_mm=0.5)
    np.testing.assert_allclose(sorted(src.diameters_mm), [4, 6, 8], rtol=0.1)
    for seed in range(6):
        m = src(np.random.default_rng(seed))
        d = equivalent_diameter_mm(m, spacing)
        assert 3.0 < d < 10.0 and _is_tight(m)
    np.testing.assert_array_equal(src(np.random.default_rng(1)), src(np.random.default_rng(1)))


def test_anisotropic_spacing_gives_fewer_voxels_along_the_thick_axis():
    src = EllipsoidMaskSource(3, [12.0], spacing_mm=(1.0, 1.0, 3.0), axis_ratio=(1.0, 1.0),
                              elastic_mm=0.0)
    m = src(np.random.default_rng(0))
    assert m.shape[2] * 2 < min(m.shape[:2])


def test_checkpoint_mask_source_and_rejection_of_border_masks():
    src = CheckpointMaskSource(blob_generator(2, 16))
    m = src(np.random.default_rng(0))
    assert m is not None and _is_tight(m) and src.last_skip is None
    np.testing.assert_array_equal(m, src(np.random.default_rng(0)))
    big = CheckpointMaskSource(blob_generator(2, 16, radius=9.0), max_draws=2)
    assert big(np.random.default_rng(0)) is None
    assert big.last_skip == "generated mask touches the patch border"
    assert touches_border(np.pad(np.ones((2, 2), bool), ((0, 3), (1, 1))))
    assert not touches_border(np.pad(np.ones((2, 2), bool), 1))
