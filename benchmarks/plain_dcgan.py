"""Plain-PyTorch DCGAN: the reference that medgan's trainer is timed against.

This follows the recipe of pytorch/examples ``dcgan/main.py`` (Radford et al., 2016), written
from scratch here and extended to 3D by choosing the ``nn.Conv*d`` classes from ``dims``:

* G: latent ``(B, nz, 1, 1)`` -> ConvTranspose 4x4 (stride 1) to ``4^d``, then ConvTranspose
  4x4 stride 2 + BatchNorm + ReLU doubling the size and halving the width, last stage to
  ``nc`` channels + tanh.
* D: Conv 4x4 stride 2 + LeakyReLU(0.2) (BatchNorm on every conv but the first) down to
  ``4^d``, then a 4x4 conv to one value + sigmoid; loss ``nn.BCELoss``.
* Adam(lr 2e-4, betas (0.5, 0.999)) for both; weights ~ N(0, 0.02), BatchNorm ~ N(1, 0.02).
* One iteration: D on the real batch (label 1) and on ``fake.detach()`` (label 0), one D
  step; then one G step with label 1 through D, reusing the same ``fake``.

There is nothing medgan-specific in this file: no EMA, no DiffAugment, no label smoothing,
no monitoring, only the loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _stages(size: int) -> int:
    """Number of stride-2 stages between ``4^d`` and ``size^d`` (64 -> 4)."""
    n = int(math.log2(size)) - 2
    if n < 1 or 2 ** (n + 2) != size:
        raise ValueError(f"size must be a power of two >= 8, not {size}")
    return n


def init_weights(m: nn.Module) -> None:
    """DCGAN initialisation (apply with ``module.apply``)."""
    if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PlainGenerator(nn.Module):
    def __init__(self, dims: int, size: int, nz: int = 100, ngf: int = 64, nc: int = 2) -> None:
        super().__init__()
        n = _stages(size)
        self.dims, self.nz = dims, nz
        width = ngf * 2 ** (n - 1)
        blocks: list[nn.Module] = [
            CONV_T[dims](nz, width, 4, 1, 0, bias=False),  # (B, ngf*2^(n-1), 4, 4)
            BATCH_NORM[dims](width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):  # (B, w, s, s) -> (B, w/2, 2s, 2s)
            blocks += [CONV_T[dims](width, width // 2, 4, 2, 1, bias=False),
                       BATCH_NORM[dims](width // 2), nn.ReLU(True)]
            width //= 2
        blocks += [CONV_T[dims](width, nc, 4, 2, 1, bias=False), nn.Tanh()]  # (B, nc, S, S)
        self.main = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class PlainDiscriminator(nn.Module):
    def __init__(self, dims: int, size: int, ndf: int = 64, nc: int = 2) -> None:
        super().__init__()
        n = _stages(size)
        blocks: list[nn.Module] = [
            CONV[dims](nc, ndf, 4, 2, 1, bias=False),  # (B, ndf, S/2, S/2)
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for _ in range(n - 1):  # (B, w, s, s) -> (B, 2w, s/2, s/2), ending at 4x4
            blocks += [CONV[dims](width, width * 2, 4, 2, 1, bias=False),
                       BATCH_NORM[dims](width * 2), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        blocks += [CONV[dims](width, 1, 4, 1, 0, bias=False), nn.Sigmoid()]  # (B, 1, 1, 1)
        self.main = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


class PlainDCGAN:
    """Models, optimisers and the training iteration of the reference recipe."""

    def __init__(self, dims: int, size: int, device: torch.device, nz: int = 100, ngf: int = 64,
                 ndf: int = 64, nc: int = 2, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.dims, self.device, self.nz = dims, device, nz
        self.netG = PlainGenerator(dims, size, nz, ngf, nc).to(device)
        self.netD = PlainDiscriminator(dims, size, ndf, nc).to(device)
        self.netG.apply(init_weights)
        self.netD.apply(init_weights)
        self.criterion = nn.BCELoss()
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.real_label, self.fake_label = 1.0, 0.0

    def step(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update then one G update on the real batch ``(B, nc, *S)``; returns losses."""
        b = real.shape[0]
        noise_shape = (b, self.nz) + (1,) * self.dims
        # ---- (1) update D: maximise log D(x) + log(1 - D(G(z))) ----
        self.netD.zero_grad()
        label = torch.full((b,), self.real_label, device=self.device)
        err_d_real = self.criterion(self.netD(real), label)
        err_d_real.backward()
        noise = torch.randn(noise_shape, device=self.device)
        fake = self.netG(noise)
        label.fill_(self.fake_label)
        err_d_fake = self.criterion(self.netD(fake.detach()), label)
        err_d_fake.backward()
        self.optimizerD.step()
        # ---- (2) update G: maximise log D(G(z)), with the same fake ----
        self.netG.zero_grad()
        label.fill_(self.real_label)  # fake labels are real for the generator cost
        err_g = self.criterion(self.netD(fake), label)
        err_g.backward()
        self.optimizerG.step()
        return err_d_real + err_d_fake, err_g
