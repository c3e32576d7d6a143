"""GAN losses: values on hand-made logits, gradient penalty, one training step per loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medgan.errors import ConfigError
from medgan.models import Discriminator, Generator
from medgan.training.losses import discriminator_loss, generator_loss, gradient_penalty

KINDS = ["bce", "hinge", "wgan-gp"]
REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-2.0, 0.5])


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_values() -> None:
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5; fake: relu(1 - 2) = 0, relu(1 + 0.5) = 1.5
    assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(0.25 + 0.75)
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(0.75)


def test_wgan_values() -> None:
    assert discriminator_loss(REAL, FAKE, "wgan-gp").item() == pytest.approx(-0.75 - 1.25)
    assert generator_loss(FAKE, "wgan-gp").item() == pytest.approx(0.75)


def test_bce_values_and_label_smoothing() -> None:
    # BCE(l, t) = softplus(l) - t * l
    real_term = sum(_softplus(v) - v for v in (2.0, 0.5)) / 2
    fake_term = sum(_softplus(v) for v in (-2.0, 0.5)) / 2
    loss = discriminator_loss(REAL, FAKE, "bce")
    assert loss.item() == pytest.approx(real_term + fake_term, rel=1e-5)
    smooth_term = sum(_softplus(v) - 0.9 * v for v in (2.0, 0.5)) / 2
    smoothed = discriminator_loss(REAL, FAKE, "bce", real_label=0.9)
    assert smoothed.item() == pytest.approx(smooth_term + fake_term, rel=1e-5)
    assert smoothed.item() != pytest.approx(loss.item())
    g_term = sum(_softplus(v) - v for v in (-2.0, 0.5)) / 2  # non-saturating, target 1
    assert generator_loss(FAKE, "bce").item() == pytest.approx(g_term, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_losses_are_float32_and_finite_for_extreme_bf16_logits(kind: str) -> None:
    real = torch.tensor([1e4, -1e4], dtype=torch.bfloat16)
    fake = torch.tensor([-1e4, 1e4], dtype=torch.bfloat16)
    d_loss, g_loss = discriminator_loss(real, fake, kind), generator_loss(fake, kind)
    assert d_loss.dtype == g_loss.dtype == torch.float32
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)


def test_unknown_kind_raises() -> None:
    with pytest.raises(ConfigError, match="loss must be one of bce, hinge, wgan-gp, not 'lsgan'"):
        discriminator_loss(REAL, FAKE, "lsgan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not 'lsgan'"):
        generator_loss(FAKE, "lsgan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="real_label"):
        discriminator_loss(REAL, FAKE, "bce", real_label=1.5)


class _Linear(nn.Module):
    """D(x) = <w, x> per sample; its input gradient is ``w`` everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize("spatial", [(8, 8), (4, 4, 4)])
def test_gradient_penalty_of_linear_critic(spatial: tuple[int, ...]) -> None:
    w = torch.randn(2, *spatial)
    real, fake = torch.randn(3, 2, *spatial), torch.randn(3, 2, *spatial)
    unit = gradient_penalty(_Linear(w / w.norm()), real, fake)
    assert unit.item() == pytest.approx(0.0, abs=1e-6)
    triple = gradient_penalty(_Linear(3 * w / w.norm()), real, fake)
    assert triple.item() == pytest.approx(4.0, rel=1e-4)  # (3 - 1)^2


def test_gradient_penalty_trains_discriminator_and_is_reproducible() -> None:
    torch.manual_seed(0)
    d = Discriminator(2, 32, in_channels=2, ndf=4, norm="instance", minibatch_std=True)
    real, fake = torch.rand(3, 2, 32, 32) * 2 - 1, torch.rand(3, 2, 32, 32) * 2 - 1
    gp = gradient_penalty(d, real, fake, generator=torch.Generator().manual_seed(1))
    again = gradient_penalty(d, real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(gp) and gp.item() >= 0.0
    assert torch.equal(gp, again)
    gp.backward()
    # every weight gets a gradient; the final bias cannot (it does not change grad_x D)
    grads = {n: p.grad for n, p in d.named_parameters() if n.endswith("weight")}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
               for g in grads.values())


def test_gradient_penalty_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(_Linear(torch.ones(1)), torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_updates_both_models(kind: str) -> None:
    torch.manual_seed(0)
    g = Generator(2, 32, latent_dim=8, ngf=4)
    norm = "none" if kind == "wgan-gp" else "batch"
    d = Discriminator(2, 32, in_channels=2, ndf=4, norm=norm, minibatch_std=True)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    before_g = [p.detach().clone() for p in g.parameters()]
    before_d = [p.detach().clone() for p in d.parameters()]
    real = torch.rand(4, 2, 32, 32) * 2 - 1
    # ---- discriminator step ----
    fake = g(g.sample_latent(4))
    loss_d = discriminator_loss(d(real), d(fake.detach()), kind, real_label=0.9)
    if kind == "wgan-gp":
        loss_d = loss_d + 10.0 * gradient_penalty(d, real, fake)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    # ---- generator step ----
    loss_g = generator_loss(d(fake), kind)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, d.parameters(), strict=True))
