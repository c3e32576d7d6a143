"""DCGAN generator / discriminator: shapes for every size and rank, options, init, precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medgan.errors import ConfigError
from medgan.models import Discriminator, Generator, MinibatchStd, init_dcgan_weights

SIZES = [(2, 32), (2, 64), (2, 128), (3, 32), (3, 64)]
TINY = {"latent_dim": 8, "ngf": 4}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("image_channels", [1, 2])
@pytest.mark.parametrize(("spatial_dims", "size"), SIZES)
def test_generator_shape_and_range(spatial_dims: int, size: int, image_channels: int) -> None:
    g = Generator(spatial_dims, size, image_channels=image_channels, **TINY)
    out = g(g.sample_latent(2))
    assert out.shape == (2, image_channels + 1, *[size] * spatial_dims)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert (g.spatial_dims, g.out_size, g.image_channels, g.latent_dim) == (
        spatial_dims, size, image_channels, 8)


def test_generator_bottleneck_matches_pytorch_examples() -> None:
    g = Generator(2, 64, latent_dim=100, ngf=64)
    first = g.net[0]
    assert isinstance(first, nn.ConvTranspose2d)
    assert (first.in_channels, first.out_channels) == (100, 64 * 8)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 2]


def test_sample_latent_is_reproducible() -> None:
    g = Generator(2, 32, **TINY)
    a = g.sample_latent(3, generator=torch.Generator().manual_seed(5))
    b = g.sample_latent(3, generator=torch.Generator().manual_seed(5), device="cpu")
    assert a.shape == (3, 8)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("spatial_dims", "size"), SIZES)
def test_discriminator_shape(spatial_dims: int, size: int) -> None:
    d = Discriminator(spatial_dims, size, in_channels=2, ndf=4)
    out = d(torch.randn(2, 2, *[size] * spatial_dims))
    assert out.shape == (2,)
    assert (d.spatial_dims, d.in_size, d.in_channels) == (spatial_dims, size, 2)


@pytest.mark.parametrize("batch", [1, 3, 4])
@pytest.mark.parametrize("minibatch_std", [False, True])
@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_discriminator_options(norm: str, spectral_norm: bool, minibatch_std: bool,
                               batch: int) -> None:
    d = Discriminator(2, 32, in_channels=3, ndf=4, norm=norm, spectral_norm=spectral_norm,
                      minibatch_std=minibatch_std, dropout=0.2)
    x = torch.randn(batch, 3, 32, 32, requires_grad=True)
    out = d(x)
    assert out.shape == (batch,)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert any(isinstance(m, nn.Dropout) for m in d.modules())
    has_sn = any(hasattr(m, "parametrizations") for m in d.modules())
    assert has_sn == spectral_norm


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_discriminator_3d_options(norm: str) -> None:
    d = Discriminator(3, 32, in_channels=2, ndf=4, norm=norm, spectral_norm=True,
                      minibatch_std=True, dropout=0.1)
    assert d(torch.randn(3, 2, 32, 32, 32)).shape == (3,)


def test_discriminator_layout() -> None:
    d = Discriminator(2, 64, in_channels=2, ndf=8, norm="batch", dropout=0.3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3  # not after the first
    assert sum(isinstance(m, nn.Dropout) for m in d.modules()) == 3  # not after the last
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 6, 8])
def test_minibatch_std_matches_manual(batch: int) -> None:
    x = torch.randn(batch, 3, 4, 4)
    out = MinibatchStd()(x)
    assert out.shape == (batch, 4, 4, 4)
    assert torch.equal(out[:, :3], x)
    feature = out[:, 3]
    group = next(g for g in (4, 3, 2, 1) if g <= batch and batch % g == 0)
    for i in range(batch):  # sample i is in the group {i % (B/G) + k * B/G}
        members = x[i % (batch // group)::batch // group]
        expected = 0.0 if group == 1 else (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(feature[i], torch.full_like(feature[i], float(expected)))


def test_minibatch_std_single_sample_gives_zero_and_finite_grad() -> None:
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    out = MinibatchStd()(x)
    assert torch.equal(out[:, 2], torch.zeros(1, 4, 4, 4))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Generator(2, 48),
         "out_size must be one of 32, 64, 128 for spatial_dims=2, not 48"),
        (lambda: Generator(3, 128), "out_size must be one of 32, 64 for spatial_dims=3, not 128"),
        (lambda: Generator(4, 32), "spatial_dims must be 2 or 3, not 4"),
        (lambda: Generator(1, 32), "spatial_dims must be 2 or 3, not 1"),
        (lambda: Generator(2, 32, ngf=0), "ngf must be a positive integer, not 0"),
        (lambda: Discriminator(2, 16, 2), "in_size must be one of 32, 64, 128"),
        (lambda: Discriminator(3, 32, 2, norm="layer"), "norm must be one of batch, instance"),
        (lambda: Discriminator(2, 32, 2, dropout=1.0), r"dropout must be a probability in \[0, 1"),
    ],
)
def test_invalid_arguments_raise_config_error(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


def test_dcgan_init_statistics() -> None:
    g = Generator(2, 32, latent_dim=64, ngf=16)  # first layer: 64 x 64 x 4 x 4 weights
    w = g.net[0].weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert abs(w.mean().item()) < 0.002
    bn = g.net[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert abs(bn.weight.mean().item() - 1.0) < 0.01
    assert 0.005 < bn.weight.std().item() < 0.05
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_init_handles_spectral_norm() -> None:
    d = Discriminator(2, 32, in_channels=2, ndf=32, spectral_norm=True)
    conv = [m for m in d.modules() if isinstance(m, nn.Conv2d)][2]  # 64 x 128 x 4 x 4 weights
    original = conv.parametrizations.weight.original
    assert abs(original.std().item() - 0.02) < 0.002
    with torch.no_grad():
        original.fill_(1.0)
    init_dcgan_weights(d)
    assert abs(original.std().item() - 0.02) < 0.002
    d.train()
    for _ in range(5):  # power iteration: the normalised weight has spectral norm ~1
        d(torch.randn(2, 2, 32, 32))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert abs(sigma.item() - 1.0) < 0.1


def test_channels_last_2d() -> None:
    g = Generator(2, 32, **TINY).eval()
    d = Discriminator(2, 32, in_channels=2, ndf=4, minibatch_std=True).eval()
    z = g.sample_latent(2)
    with torch.no_grad():
        ref = d(g(z))
        g_cl = g.to(memory_format=torch.channels_last)
        d_cl = d.to(memory_format=torch.channels_last)
        x = g_cl(z).contiguous(memory_format=torch.channels_last)
        out = d_cl(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_autocast_bf16_cpu(spatial_dims: int) -> None:
    g = Generator(spatial_dims, 32, **TINY)
    d = Discriminator(spatial_dims, 32, in_channels=2, ndf=4, spectral_norm=True,
                      minibatch_std=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = g(g.sample_latent(2))
        logits = d(fake)
    assert fake.shape == (2, 2, *[32] * spatial_dims)
    assert logits.shape == (2,)
    assert torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(p.grad is not None for p in g.parameters())
