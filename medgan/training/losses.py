"""GAN losses: non-saturating BCE, hinge and WGAN-GP, plus the gradient penalty.

Logits are ``(B,)`` raw discriminator outputs. Every loss is computed in float32, so calling it
on bf16/fp16 logits from an autocast region is safe. The gradient-penalty weight is applied by
the caller.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medgan.errors import ConfigError

LossKind = Literal["bce", "hinge", "wgan-gp"]
LOSS_KINDS: tuple[str, ...] = get_args(LossKind)


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ConfigError(f"loss must be one of {', '.join(LOSS_KINDS)}, not {kind!r}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: LossKind,
                       real_label: float = 1.0) -> Tensor:
    """Scalar D loss from logits on real ``(B,)`` and fake ``(B,)`` batches.

    ``bce``: BCE with real targets ``real_label`` (one-sided smoothing, e.g. 0.9) and fake
    targets 0, summed over the two halves. ``hinge``: ``E[relu(1 - real)] + E[relu(1 + fake)]``.
    ``wgan-gp``: ``E[fake] - E[real]`` (add :func:`gradient_penalty` separately).
    """
    _check_kind(kind)
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "bce":
        if not 0.0 < real_label <= 1.0:
            raise ConfigError(f"real_label must be in (0, 1], not {real_label!r}")
        loss_real = F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
        loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return loss_real + loss_fake
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(fake_logits: Tensor, kind: LossKind) -> Tensor:
    """Scalar G loss from D's logits on fakes ``(B,)``.

    ``bce``: non-saturating ``BCE(fake, 1)``; ``hinge`` and ``wgan-gp``: ``-E[fake]``.
    """
    _check_kind(kind)
    fake = fake_logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return -fake.mean()


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` (Gulrajani et al., 2017).

    ``x_hat = a * real + (1 - a) * fake`` with one ``a ~ U(0, 1)`` per sample, drawn from
    ``generator`` (on ``real.device``) when given. ``real`` and ``fake`` are ``(B, C, *S)``;
    both are detached. The graph is kept (``create_graph=True``) so the penalty trains D.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, not {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), generator=generator,
                       device=real.device).to(real.dtype)  # (B, 1, *[1] * d)
    x_hat = torch.lerp(fake.detach(), real.detach(), alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    grad_norm = torch.sqrt(grad.float().flatten(1).square().sum(dim=1) + 1e-12)  # (B,)
    return (grad_norm - 1.0).square().mean()
