"""Generator upsampling: transposed convolutions ('deconv') vs resize-then-convolve ('resize')."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.blocks import UpSample
from torch import nn
from torch.nn.modules.conv import _ConvNd

from medgan.errors import ConfigError
from medgan.models import Discriminator, Generator

SIZES = [(2, 32), (2, 64), (2, 128), (3, 32), (3, 64)]
TINY = {"latent_dim": 8, "ngf": 4}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _conv_weights(g: Generator) -> list[int]:
    return [m.weight.numel() for m in g.modules() if isinstance(m, _ConvNd)]


@pytest.mark.parametrize("image_channels", [1, 2])
@pytest.mark.parametrize(("spatial_dims", "size"), SIZES)
def test_resize_generator_shape_and_range(spatial_dims: int, size: int,
                                          image_channels: int) -> None:
    g = Generator(spatial_dims, size, image_channels=image_channels, upsample="resize", **TINY)
    out = g(g.sample_latent(2))
    assert out.shape == (2, image_channels + 1, *[size] * spatial_dims)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert g.upsample == "resize"


@pytest.mark.parametrize(("spatial_dims", "size"), SIZES)
def test_resize_stages_are_nearest_upsample_then_conv3(spatial_dims: int, size: int) -> None:
    g = Generator(spatial_dims, size, upsample="resize", **TINY)
    stages = [m for m in g.net if isinstance(m, UpSample)]
    assert len(stages) == int(math.log2(size)) - 2  # every x2 stage after the 4^d seed
    conv_t = [m for m in g.modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    assert len(conv_t) == 1  # only the 1^d -> 4^d projection
    for stage in stages:
        up, conv = stage.upsample_non_trainable, stage.postconv
        assert isinstance(up, nn.Upsample) and up.mode == "nearest"
        assert conv.kernel_size == (3,) * spatial_dims and conv.stride == (1,) * spatial_dims
        assert conv.padding == (1,) * spatial_dims


@pytest.mark.parametrize(("spatial_dims", "size"), SIZES)
def test_resize_has_3_to_4_kernel_weights_of_deconv(spatial_dims: int, size: int) -> None:
    """Same channels per stage; each x2 stage has 3^d instead of 4^d weights per channel pair."""
    deconv = _conv_weights(Generator(spatial_dims, size, upsample="deconv", **TINY))
    resize = _conv_weights(Generator(spatial_dims, size, upsample="resize", **TINY))
    assert resize[0] == deconv[0]  # the seed projection is shared
    ratio = (3 / 4) ** spatial_dims
    assert len(resize) == len(deconv)
    for r, d in zip(resize[1:], deconv[1:], strict=True):
        assert r == pytest.approx(d * ratio)
    # and the total stays the same order of magnitude: between the stage ratio and 1
    total_r = sum(p.numel() for p in Generator(spatial_dims, size, upsample="resize",
                                               **TINY).parameters())
    total_d = sum(p.numel() for p in Generator(spatial_dims, size, **TINY).parameters())
    assert ratio * total_d < total_r < total_d


def test_quickstart_sized_parameter_counts() -> None:
    """The quick-start generator (latent 64, ngf 32, 64 px): 952,258 vs 650,754 parameters."""
    kw = {"latent_dim": 64, "ngf": 32}
    assert sum(p.numel() for p in Generator(2, 64, **kw).parameters()) == 952_258
    assert sum(p.numel() for p in Generator(2, 64, upsample="resize", **kw).parameters()) == \
        650_754


def test_default_is_deconv_and_unchanged() -> None:
    g = Generator(2, 64, latent_dim=100, ngf=64)
    assert g.upsample == "deconv"
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 2]
    assert not any(isinstance(m, UpSample) for m in g.modules())


@pytest.mark.parametrize("bad", ["bilinear", "Resize", "", None, 1])
def test_bad_upsample_is_a_config_error(bad) -> None:
    with pytest.raises(ConfigError, match=r"upsample must be one of deconv, resize, not "):
        Generator(2, 32, upsample=bad, **TINY)


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, 32), (3, 32)])
def test_resize_generator_trains(spatial_dims: int, size: int) -> None:
    """One D step and one G step (non-saturating BCE): finite losses, every G weight moves."""
    g = Generator(spatial_dims, size, upsample="resize", **TINY)
    d = Discriminator(spatial_dims, size, in_channels=2, ndf=4)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    real = torch.rand(4, 2, *[size] * spatial_dims) * 2 - 1
    before = {k: v.clone() for k, v in g.state_dict().items() if k.endswith("weight")}
    # ---- D step ----
    fake = g(g.sample_latent(4))
    loss_d = bce(d(real), torch.ones(4)) + bce(d(fake.detach()), torch.zeros(4))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    # ---- G step ----
    loss_g = bce(d(fake), torch.ones(4))
    opt_g.zero_grad()
    loss_g.backward()
    grads = [p.grad for p in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    opt_g.step()
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    after = g.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
