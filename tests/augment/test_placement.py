"""Placement: inside the region, away from lesions, always fitting, reasons when not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from medgan.augment.placement import PlacementSettings, place_mask, tissue_region, valid_offsets
from medgan.errors import ConfigError, DataError


def _at(mask: np.ndarray, offset, shape) -> np.ndarray:
    full = np.zeros(shape, bool)
    full[tuple(slice(o, o + s) for o, s in zip(offset, mask.shape, strict=True))] = mask
    return full


def test_valid_offsets_match_brute_force():
    rng = np.random.default_rng(0)
    region = rng.random((14, 12)) > 0.15
    occupied = np.zeros_like(region)
    occupied[2, 3] = True
    mask = np.array([[0, 1, 1], [1, 1, 0]], bool)
    valid, start = valid_offsets(mask, region, occupied, (1.0, 1.0), 1.5)
    near = distance_transform_edt(~occupied) <= 1.5
    for i, j in itertools.product(range(14 - 1), range(12 - 2)):
        placed = _at(mask, (i, j), region.shape)
        ok = region[placed].all() and not near[placed].any()
        li, lj = i - start[0], j - start[1]
        inside = 0 <= li < valid.shape[0] and 0 <= lj < valid.shape[1]
        assert ok == (inside and bool(valid[li, lj])), (i, j)


@pytest.mark.parametrize("seed", range(10))
def test_placed_masks_fit_and_keep_the_margin(seed):
    region = np.zeros((60, 50), bool)
    region[5:55, 5:45] = True
    occupied = np.zeros_like(region)
    occupied[20:30, 20:30] = True
    mask = np.ones((9, 6), bool)
    p = place_mask(mask, region, np.random.default_rng(seed), occupied, (1.0, 2.0), 4.0)
    assert p.ok
    placed = _at(mask, p.offset, region.shape)
    assert region[placed].all()
    assert distance_transform_edt(~occupied, sampling=(1.0, 2.0))[placed].min() > 4.0
    again = place_mask(mask, region, np.random.default_rng(seed), occupied, (1.0, 2.0), 4.0)
    assert again.offset == p.offset


def test_a_mask_that_fits_exactly_is_always_placed():
    region = np.zeros((40, 40), bool)
    region[10:20, 30:37] = True
    mask = np.ones((10, 7), bool)
    offsets = {place_mask(mask, region, np.random.default_rng(s)).offset for s in range(5)}
    assert offsets == {(10, 30)}


def test_skip_reasons():
    region = np.ones((10, 10), bool)
    rng = np.random.default_rng(0)
    assert place_mask(np.zeros((3, 3), bool), region, rng).reason == "empty mask"
    assert place_mask(np.ones((11, 2), bool), region, rng).reason == "mask larger than image"
    assert place_mask(np.ones((2, 2), bool), ~region, rng).reason == "empty region"
    occupied = np.zeros_like(region)
    occupied[5, 5] = True
    p = place_mask(np.ones((4, 4), bool), region, rng, occupied, margin_mm=3.0)
    assert not p.ok and p.reason == "no anchor fits"
    with pytest.raises(DataError, match="mask must have 2 or 1 axes"):
        place_mask(np.ones((2, 2, 2, 2), bool), region, rng)


def test_2d_mask_in_a_3d_region_is_one_slice_thick():
    region = np.zeros((20, 20, 6), bool)
    region[..., 4] = True  # only slice 4 is tissue
    p = place_mask(np.ones((3, 5), bool), region, np.random.default_rng(0))
    assert p.ok and p.offset[2] == 4


def test_tissue_regions():
    image = np.linspace(-1, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    inten = tissue_region(image, PlacementSettings(region="intensity", intensity_range=(0, 0.5)))
    assert inten.sum() == ((image[0] >= 0) & (image[0] <= 0.5)).sum()
    organ = np.zeros((1, 10, 10), np.uint8)
    organ[0, :5] = 2
    organ[0, 5:] = 3
    key = PlacementSettings(region="key", region_values=(3,))
    region = tissue_region(image, key, organ)
    assert region.sum() == 50 and region[9].all()
    assert tissue_region(image, PlacementSettings(region="anywhere")).all()
    with pytest.raises(DataError, match="region='key' needs a region map"):
        tissue_region(image, key)
    with pytest.raises(DataError, match="region map shape"):
        tissue_region(image, key, organ[:, :5])
    with pytest.raises(ConfigError, match="intensity_range must be"):
        PlacementSettings(region="intensity")
    with pytest.raises(ConfigError, match="region must be body, intensity, key or anywhere"):
        PlacementSettings(region="liver")  # type: ignore[arg-type]
