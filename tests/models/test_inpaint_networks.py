"""Inpainting generator and discriminator: shapes (2D/3D), exact compositing, noise, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from medgan.errors import ConfigError
from medgan.models.inpaint import InpaintDiscriminator, InpaintGenerator, composite, erase_region

CASES = [(2, 32), (2, 64), (3, 32)]


def _inputs(spatial_dims: int, size: int, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, *(size,) * spatial_dims)
    x = torch.rand(shape, generator=g) * 2 - 1
    mask = torch.zeros(shape)
    centre = (slice(None), 0, *[slice(size // 2 - 3, size // 2 + 3)] * spatial_dims)
    mask[centre] = 1.0
    return x, mask, erase_region(mask, 2)


@pytest.mark.parametrize(("spatial_dims", "size"), CASES)
def test_shapes(spatial_dims, size):
    gen = InpaintGenerator(spatial_dims, size, ngf=4, noise_channels=2)
    x, mask, erase = _inputs(spatial_dims, size)
    noise = gen.sample_noise(3, torch.Generator().manual_seed(0))
    assert noise.shape == (3, 2) + (4,) * spatial_dims
    out = gen(x, mask, erase, noise)
    assert out.shape == x.shape and out.abs().max() <= 1.0
    disc = InpaintDiscriminator(spatial_dims, ndf=4)
    logits = disc(out, mask)
    assert logits.shape == (3, (size // 8) ** spatial_dims)
    assert disc(out[(..., *[slice(0, 16)] * spatial_dims)],
                mask[(..., *[slice(0, 16)] * spatial_dims)]).shape == (3, 2 ** spatial_dims)


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, 32), (3, 32)])
def test_every_voxel_outside_the_erase_region_is_bit_identical(spatial_dims, size):
    gen = InpaintGenerator(spatial_dims, size, ngf=4)
    x, mask, erase = _inputs(spatial_dims, size)
    x[0, 0, 0, 0] = -0.0  # a sign bit that a "+ 0 * fill" composite would lose
    out = gen(x, mask, erase, gen.sample_noise(3, torch.Generator().manual_seed(1)))
    outside = (erase == 0).expand_as(x)
    assert torch.equal(out[outside].view(torch.int32), x[outside].view(torch.int32))
    assert not torch.equal(out[~outside], x[~outside])  # the erase region is repainted


def test_composite_gradients_reach_the_fill_inside_only():
    x = torch.zeros(1, 1, 4, 4)
    fill = torch.ones(1, 1, 4, 4, requires_grad=True)
    erase = torch.zeros(1, 1, 4, 4)
    erase[..., 1:3, 1:3] = 1
    composite(x, fill, erase).sum().backward()
    assert torch.equal(fill.grad, erase)


def test_noise_and_eval_outputs_do_not_depend_on_batch_size():
    gen = InpaintGenerator(2, 32, ngf=4).eval()
    few = gen.sample_noise(2, torch.Generator().manual_seed(3))
    many = gen.sample_noise(5, torch.Generator().manual_seed(3))
    assert torch.equal(few, many[:2])
    x, mask, erase = _inputs(2, 32, batch=5)
    with torch.no_grad():
        one = gen(x[:1], mask[:1], erase[:1], many[:1])
        five = gen(x, mask, erase, many)
    torch.testing.assert_close(one, five[:1], atol=1e-5, rtol=0)
    assert not torch.allclose(five[0], five[1])  # different noise and context


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_erase_region_is_the_ball_dilation(spatial_dims):
    mask = torch.zeros((1, 1) + (15,) * spatial_dims)
    mask[(0, 0) + (7,) * spatial_dims] = 1
    mask[(0, 0) + (3,) * spatial_dims] = 1
    erase = erase_region(mask, 3)[0, 0].numpy() > 0
    dist = distance_transform_edt(mask[0, 0].numpy() == 0)
    np.testing.assert_array_equal(erase, dist <= 3)
    assert torch.equal(erase_region(mask, 0), mask)


def test_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="size must be one of 32, 64 for spatial_dims=3, not 48"):
        InpaintGenerator(3, 48)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3, not 4"):
        InpaintDiscriminator(4)
    with pytest.raises(ConfigError, match="erase_margin must be a non-negative integer"):
        InpaintGenerator(2, 32, erase_margin=-1)
    gen = InpaintGenerator(2, 32, ngf=4)
    x, mask, erase = _inputs(2, 32)
    with pytest.raises(ConfigError, match=r"x must have shape \(B, 1, 32, 32\), not"):
        gen(x[..., :16], mask, erase)
    with pytest.raises(ConfigError, match="mask must have shape"):
        gen(x, mask[:2], erase)
    with pytest.raises(ConfigError, match="at least 8 voxels"):
        InpaintDiscriminator(2, ndf=4)(x[..., :4, :4], mask[..., :4, :4])
