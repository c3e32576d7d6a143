"""Mask clean-up: threshold, hole filling, small-component removal, largest component."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.errors import DataError
from medgan.sampling import MaskPostprocess, postprocess_mask


def _ring(spatial_dims: int, size: int = 24) -> np.ndarray:
    """A hollow square/cube lesion (values in [-1, 1]) with a closed cavity."""
    m = -np.ones((size,) * spatial_dims, np.float32)
    outer = tuple(slice(4, 16) for _ in range(spatial_dims))
    inner = tuple(slice(7, 13) for _ in range(spatial_dims))
    m[outer] = 0.8
    m[inner] = -0.5
    return m


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_holes_filled(spatial_dims):
    out = postprocess_mask(_ring(spatial_dims))
    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1}
    assert out[(10,) * spatial_dims] == 1  # cavity filled
    assert out.sum() == 12**spatial_dims
    kept = postprocess_mask(_ring(spatial_dims), fill_holes=False)
    assert kept[(10,) * spatial_dims] == 0


@pytest.mark.parametrize(("spatial_dims", "speck", "default_min"), [(2, 9, 10), (3, 19, 20)])
def test_small_objects_dropped_with_rank_default(spatial_dims, speck, default_min):
    m = -np.ones((24,) * spatial_dims, np.float32)
    m[(slice(2, 12),) * spatial_dims] = 1.0  # big lesion
    flat = np.zeros(m.size, bool)
    far = np.ravel_multi_index((23,) * spatial_dims, m.shape)
    flat[far - speck + 1:far + 1] = True  # a speck of `speck` voxels along the last axis
    m[flat.reshape(m.shape)] = 1.0
    out = postprocess_mask(m)
    assert out.sum() == 10**spatial_dims  # speck removed (smaller than the default)
    assert postprocess_mask(m, min_size=speck).sum() == 10**spatial_dims + speck
    assert postprocess_mask(m, min_size=0).sum() == 10**spatial_dims + speck
    assert default_min > speck


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_keep_largest(spatial_dims):
    m = -np.ones((24,) * spatial_dims, np.float32)
    m[(slice(1, 9),) * spatial_dims] = 1.0
    m[(slice(12, 22),) * spatial_dims] = 1.0
    out = postprocess_mask(m, keep_largest=True)
    assert out.sum() == 10**spatial_dims
    assert out[(15,) * spatial_dims] == 1 and out[(4,) * spatial_dims] == 0
    assert postprocess_mask(m).sum() == 8**spatial_dims + 10**spatial_dims


def test_threshold_probability_and_torch_input():
    prob = torch.zeros(16, 16)
    prob[4:12, 4:12] = 0.7
    assert postprocess_mask(prob, threshold=0.5).sum() == 64
    assert postprocess_mask(prob, threshold=0.8).sum() == 0


def test_empty_stays_empty_and_bad_shape_is_refused():
    assert postprocess_mask(-np.ones((8, 8))).sum() == 0
    with pytest.raises(DataError, match="no channel axis"):
        postprocess_mask(np.zeros((1, 1, 8, 8)))


def test_settings_object_matches_function():
    m = _ring(2)
    settings = MaskPostprocess(fill_holes=False, min_size=3)
    np.testing.assert_array_equal(settings(m), postprocess_mask(m, fill_holes=False, min_size=3))
    assert settings.to_dict()["min_size"] == 3


def _reference(mask: np.ndarray, min_size: int, keep_largest: bool) -> np.ndarray:
    """The steps written with the library functions themselves (slower, same result)."""
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import label

    mask = binary_fill_holes(mask)
    labels = label(mask, connectivity=mask.ndim)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= max(min_size, 1)
    if keep_largest and keep.any():
        keep = np.arange(len(sizes)) == int(np.argmax(sizes))
    return keep[labels].astype(np.uint8)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_scipy_fill_and_skimage_components_on_random_masks(spatial_dims):
    """Holes touching a face of the array stay open; cavities reached only through an edge or
    a corner are closed (background is face-connected, lesions fully connected)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(spatial_dims)
    for trial in range(150):
        shape = tuple(rng.integers(3, 33 if spatial_dims == 2 else 13, size=spatial_dims))
        field = gaussian_filter(rng.normal(size=shape), rng.uniform(0.0, 2.0))
        threshold = float(rng.uniform(-0.2, 0.2))
        min_size, largest = int(rng.integers(0, 12)), bool(trial % 2)
        got = postprocess_mask(field, threshold, min_size=min_size, keep_largest=largest)
        want = _reference(field > threshold, min_size, largest)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}, shape {shape}")
