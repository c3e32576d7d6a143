"""Lesion-centred patch extraction, 2D (axial slices) and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_data import phantom_arrays

from medgan.config import DataConfig
from medgan.data import extract_patches
from medgan.data.patches import BACKGROUND


def model_space(shape=(48, 48, 12), spacing=(1.0, 1.0, 1.0), channels=1, **kwargs):
    """A phantom as ``load_case`` returns it: image (C, *S) in [-1, 1], mask (1, *S) uint8."""
    image, label, centre = phantom_arrays(shape, "ct", channels, spacing, **kwargs)
    image = image if channels > 1 else image[None]
    image = np.clip((image + 200.0) / 250.0 - 1.0, -1.0, 1.0)  # the CT soft-tissue window
    return torch.as_tensor(image), torch.as_tensor((label > 0)[None].astype(np.uint8)), centre


def data_cfg(**kwargs) -> DataConfig:
    return DataConfig(**{"patch_size": 32, "min_lesion_voxels": 5, "patches_per_case": 64,
                         **kwargs})


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("spatial_dims", "shape", "channels", "patch"),
    [(2, (48, 48, 12), 1, 32), (2, (48, 48, 12), 2, 16), (3, (40, 40, 40), 1, 32),
     (3, (40, 40, 40), 3, 16)],
)
def test_patch_shapes_and_dtypes(spatial_dims, shape, channels, patch):
    image, mask, _ = model_space(shape, channels=channels, lesion_radius_mm=8)
    out = extract_patches(image, mask, spatial_dims, data_cfg(patch_size=patch), rng())
    n = len(out.images)
    assert n > 0
    assert tuple(out.images.shape) == (n, channels, *(patch,) * spatial_dims)
    assert tuple(out.masks.shape) == (n, 1, *(patch,) * spatial_dims)
    assert out.images.dtype == torch.float32
    assert out.masks.dtype == torch.uint8
    assert out.has_lesion.dtype == torch.bool
    assert out.images.min() >= -1.0
    assert out.images.max() <= 1.0


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5])
def test_every_lesion_patch_contains_lesion(spatial_dims, jitter):
    shape = (48, 48, 12) if spatial_dims == 2 else (48, 48, 40)
    image, mask, _ = model_space(shape, lesion_radius_mm=5)
    cfg = data_cfg(center_jitter=jitter, patches_per_case=16)
    for seed in range(3):
        out = extract_patches(image, mask, spatial_dims, cfg, rng(seed))
        assert out.has_lesion.all()
        assert all(m.any() for m in out.masks)


def test_patches_are_centred_on_the_lesion_without_jitter():
    image, mask, (cx, cy, _) = model_space(lesion_radius_mm=5, lesion_center=(22, 26, 6))
    out = extract_patches(image, mask, 2, data_cfg(center_jitter=0.0), rng())
    for m in out.masks:
        centroid = np.argwhere(m[0].numpy()).mean(0)
        np.testing.assert_allclose(centroid, (16, 16), atol=1.0)
        assert m[0, 16, 16] == 1
    # image and mask come from the same place: the lesion is brighter under its mask
    lesion = out.images[out.masks.bool()].mean()
    assert lesion > out.images[(out.images > -1) & ~out.masks.bool()].mean()


def test_3d_patches_centre_each_component():
    image, mask, _ = model_space((64, 64, 64), lesion_radius_mm=5, lesion_center=(20, 20, 20))
    other, mask2, _ = model_space((64, 64, 64), lesion_radius_mm=4, lesion_center=(44, 44, 44))
    mask = mask | mask2
    out = extract_patches(image, mask, 3, data_cfg(center_jitter=0.0, patches_per_case=4),
                          rng())
    assert len(out.images) == 4  # cycles over the components, largest first
    for m in out.masks:
        assert m[0, 16, 16, 16] == 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_lesion_free_fraction_is_honoured(spatial_dims, fraction):
    shape = (96, 96, 12) if spatial_dims == 2 else (96, 96, 40)
    image, mask, _ = model_space(shape, lesion_radius_mm=5, lesion_center=(70, 48, 6
                                 if spatial_dims == 2 else 20))
    cfg = data_cfg(lesion_free_fraction=fraction, patches_per_case=12, patch_size=16)
    out = extract_patches(image, mask, spatial_dims, cfg, rng())
    n_free = int((~out.has_lesion).sum())
    assert n_free / len(out.images) == pytest.approx(fraction, abs=0.1)
    free = out.masks[~out.has_lesion]
    assert free.sum() == 0  # really lesion-free
    # drawn from inside the body, not from air
    assert all((img > BACKGROUND + 1e-3).any() for img in out.images[~out.has_lesion])
    # lesion patches come first, then the lesion-free ones
    assert out.has_lesion[: len(out.images) - n_free].all()


def test_no_lesion_free_patches_by_default():
    image, mask, _ = model_space()
    out = extract_patches(image, mask, 2, data_cfg(), rng())
    assert out.has_lesion.all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_small_scan_is_padded(spatial_dims):
    """A 20x20x(12|20) scan in a 32 patch: image padded with -1, mask with 0."""
    shape = (20, 20, 12) if spatial_dims == 2 else (20, 20, 20)
    image, mask, _ = model_space(shape, lesion_radius_mm=4, lesion_center=(10, 10, 6))
    image[image <= BACKGROUND] = -0.5  # no -1 inside the scan, so padding is recognisable
    out = extract_patches(image, mask, spatial_dims, data_cfg(center_jitter=0.0), rng())
    assert len(out.images) > 0
    for img, m in zip(out.images, out.masks, strict=True):
        inside = img[0] > BACKGROUND
        assert int(inside.sum()) == 20**spatial_dims  # exactly the scan, the rest is padding
        assert (img[0][~inside] == BACKGROUND).all()
        assert (m[0][~inside] == 0).all()
        assert m.sum() > 0


def test_patches_per_case_caps_2d_slices_spread_over_the_lesion():
    image, mask, _ = model_space((48, 48, 40), lesion_radius_mm=12, lesion_center=(24, 24, 20))
    full = extract_patches(image, mask, 2, data_cfg(patches_per_case=1000), rng())
    capped = extract_patches(image, mask, 2, data_cfg(patches_per_case=5), rng())
    assert len(full.images) > 5
    assert len(capped.images) == 5


def test_patches_per_case_sets_the_3d_count():
    image, mask, _ = model_space((40, 40, 40), lesion_radius_mm=6)
    for n in (1, 3, 7):
        out = extract_patches(image, mask, 3, data_cfg(patches_per_case=n), rng())
        assert len(out.images) == n


def test_min_lesion_voxels_skips_small_lesions():
    image, mask, _ = model_space(lesion_radius_mm=2)  # a handful of voxels per slice
    out = extract_patches(image, mask, 2, data_cfg(min_lesion_voxels=200), rng())
    assert len(out.images) == 0
    assert tuple(out.images.shape) == (0, 1, 32, 32)
    assert tuple(out.masks.shape) == (0, 1, 32, 32)


def test_same_seed_same_patches():
    image, mask, _ = model_space()
    cfg = data_cfg(lesion_free_fraction=0.3)
    a = extract_patches(image, mask, 2, cfg, rng(5))
    b = extract_patches(image, mask, 2, cfg, rng(5))
    torch.testing.assert_close(a.images, b.images)
    torch.testing.assert_close(a.masks, b.masks)
