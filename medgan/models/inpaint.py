"""Lesion inpainting networks for 2D and 3D patches (erase-and-restore, Jin et al. 2018 style).

The generator sees a real patch whose erase region ``E`` (the lesion mask ``M`` dilated by a
margin) is blanked, plus ``M`` and ``E`` as channels, and fills ``E`` with a lesion shaped like
``M`` (or with healthy tissue when ``M`` is empty). Its output is composited so that every voxel
outside ``E`` is the input voxel, bit for bit. The discriminator judges an image together with
its mask (PatchGAN-style: one logit per receptive field). As in :mod:`medgan.models.dcgan`, one
class serves both ranks through MONAI's layer factories.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import Tensor, nn

from medgan.errors import ConfigError
from medgan.models.dcgan import _check_positive, check_size, init_dcgan_weights

#: Bottleneck edge length of the generator, in voxels (as the DCGAN seed).
BOTTLENECK = 4


def composite(x: Tensor, fill: Tensor, erase: Tensor) -> Tensor:
    """``(1 - E) * x + E * fill`` for binary ``erase`` (B, 1, *P); ``x``, ``fill`` (B, C, *P).

    Written as a selection, so voxels outside ``E`` are ``x`` bit for bit (also ``-0.0`` and any
    value ``fill`` holds there); gradients flow to ``fill`` inside ``E`` only.
    """
    return torch.where(erase > 0.5, fill, x)


class InpaintGenerator(nn.Module):
    """Context + masks + noise -> inpainted patch ``(B, image_channels, *[size] * spatial_dims)``.

    Input channels: the image with ``E`` blanked to 0 (``image_channels``), ``M`` and ``E`` in
    {0, 1}. An encoder of ``n = log2(size) - 2`` strided convs (kernel 4, stride 2; batch norm
    after all but the first; LeakyReLU 0.2) takes the patch to a ``4^d`` bottleneck, where
    ``noise_channels`` maps of N(0, 1) noise are appended; a decoder of ``n`` transposed convs
    (batch norm, ReLU) with U-Net skip connections returns to full size, then tanh.

    Args:
        spatial_dims: 2 or 3.
        size: patch edge length in voxels (see :data:`medgan.config.PATCH_SIZES`).
        image_channels: image channels in and out.
        ngf: channels of the first encoder stage (doubled per stage, at most ``8 * ngf``).
        noise_channels: noise maps at the bottleneck.
        erase_margin: margin in voxels by which ``M`` is dilated to ``E`` (recorded for users
            of a trained generator; the network itself takes ``E`` as given).
    """

    def __init__(self, spatial_dims: int, size: int, image_channels: int = 1, ngf: int = 32,
                 noise_channels: int = 8, erase_margin: int = 3) -> None:
        super().__init__()
        n = check_size(spatial_dims, size, "size")
        _check_positive(image_channels=image_channels, ngf=ngf, noise_channels=noise_channels)
        if isinstance(erase_margin, bool) or not isinstance(erase_margin, int) or erase_margin < 0:
            raise ConfigError(f"erase_margin must be a non-negative integer, not {erase_margin!r}")
        self.spatial_dims, self.size, self.image_channels = spatial_dims, size, image_channels
        self.noise_channels, self.erase_margin = noise_channels, erase_margin
        conv, conv_t = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        norm = Norm[Norm.BATCH, spatial_dims]
        widths = [ngf * min(2 ** i, 8) for i in range(n)]  # encoder outputs, size/2 .. 4
        self.down = nn.ModuleList()
        c_in = image_channels + 2
        for i, c_out in enumerate(widths):  # (B, c_in, s) -> (B, c_out, s/2)
            layers: list[nn.Module] = [conv(c_in, c_out, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(norm(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*layers))
            c_in = c_out
        self.up = nn.ModuleList()
        c_in = widths[-1] + noise_channels  # bottleneck + noise, (B, ., 4, 4)
        for i in reversed(range(1, n)):  # (B, c_in, s) -> (B, widths[i-1], 2s), then skip
            self.up.append(nn.Sequential(conv_t(c_in, widths[i - 1], 4, 2, 1, bias=False),
                                         norm(widths[i - 1]), nn.ReLU(True)))
            c_in = 2 * widths[i - 1]
        self.head = nn.Sequential(conv_t(c_in, image_channels, 4, 2, 1), nn.Tanh())  # (B, C, S)
        init_dcgan_weights(self)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of one sample's noise: ``(noise_channels, *[4] * spatial_dims)``."""
        return (self.noise_channels,) + (BOTTLENECK,) * self.spatial_dims

    def sample_noise(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """Noise ``(n, *noise_shape)`` ~ N(0, 1), drawn one sample after the other on
        ``generator``'s device, so sample ``i`` is the same whatever ``n``; moved to ``device``."""
        draw = generator.device if generator is not None else device
        z = [torch.randn(self.noise_shape, generator=generator, device=draw) for _ in range(n)]
        out = torch.stack(z) if z else torch.zeros(0, *self.noise_shape, device=draw)
        return out if device is None else out.to(device)

    def fill(self, x: Tensor, mask: Tensor, erase: Tensor, noise: Tensor | None = None) -> Tensor:
        """Raw generator output ``(B, C, *P)`` in [-1, 1] (not composited).

        ``x`` ``(B, C, *P)`` in [-1, 1]; ``mask``/``erase`` ``(B, 1, *P)`` in {0, 1}; ``noise``
        ``(B, *noise_shape)`` (None: zeros, a deterministic fill).
        """
        self._check(x, mask, erase)
        h = torch.cat([x * (1.0 - erase), mask, erase], dim=1)  # (B, C + 2, *P), E blanked
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        if noise is None:
            noise = h.new_zeros(h.shape[0], *self.noise_shape)
        h = torch.cat([h, noise.to(h)], dim=1)  # (B, widths[-1] + noise_channels, 4, ...)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = torch.cat([block(h), skip], dim=1)
        return self.head(h)

    def forward(self, x: Tensor, mask: Tensor, erase: Tensor,
                noise: Tensor | None = None) -> Tensor:
        """Composited patch ``(B, C, *P)``: ``x`` outside ``erase``, the fill inside."""
        return composite(x, self.fill(x, mask, erase, noise), erase)

    def _check(self, x: Tensor, mask: Tensor, erase: Tensor) -> None:
        spatial = (self.size,) * self.spatial_dims
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.image_channels or \
                tuple(x.shape[2:]) != spatial:
            raise ConfigError(f"x must have shape (B, {self.image_channels}, "
                              f"{', '.join(map(str, spatial))}), not {tuple(x.shape)}")
        for name, m in (("mask", mask), ("erase", erase)):
            if m.shape != (x.shape[0], 1, *spatial):
                raise ConfigError(f"{name} must have shape {(x.shape[0], 1, *spatial)}, "
                                  f"not {tuple(m.shape)}")


class InpaintDiscriminator(nn.Module):
    """Image + mask ``(B, image_channels + 1, *S)`` -> PatchGAN logits ``(B, K)`` (no sigmoid).

    ``n_layers`` strided convs (kernel 4, stride 2, LeakyReLU 0.2, batch norm after all but the
    first) then a kernel-3 conv to one channel: each of the ``K`` logits judges one receptive
    field, so the same net works on the full patch and on a lesion crop of any size
    ``>= 2 ** n_layers``.
    """

    def __init__(self, spatial_dims: int, image_channels: int = 1, ndf: int = 32,
                 n_layers: int = 3) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, not {spatial_dims!r}")
        _check_positive(image_channels=image_channels, ndf=ndf, n_layers=n_layers)
        self.spatial_dims, self.image_channels = spatial_dims, image_channels
        self.n_layers = n_layers
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        layers: list[nn.Module] = []
        c_in, c_out = image_channels + 1, ndf
        for i in range(n_layers):  # (B, c_in, s) -> (B, c_out, s/2)
            layers.append(conv(c_in, c_out, 4, 2, 1, bias=i == 0))
            if i > 0:
                layers.append(norm(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, c_out = c_out, min(c_out * 2, ndf * 8)
        layers.append(conv(c_in, 1, 3, 1, 1))  # (B, 1, s / 2^n_layers)
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """``image`` ``(B, C, *S)``, ``mask`` ``(B, 1, *S)`` in {0, 1} -> logits ``(B, K)``."""
        if min(image.shape[2:]) < 2 ** self.n_layers:
            raise ConfigError(f"image must be at least {2 ** self.n_layers} voxels along every "
                              f"axis for n_layers={self.n_layers}, not {tuple(image.shape[2:])}")
        return self.net(torch.cat([image, mask * 2.0 - 1.0], dim=1)).flatten(1)


def ball(radius: int, spatial_dims: int) -> Tensor:
    """Boolean ball ``(2r + 1,) * spatial_dims`` of ``radius`` voxels (Euclidean)."""
    axes = torch.meshgrid(*[torch.arange(-radius, radius + 1.0)] * spatial_dims, indexing="ij")
    return sum(a**2 for a in axes) <= radius**2 + 1e-6


def erase_region(mask: Tensor, margin: int) -> Tensor:
    """``E`` = ``mask`` ``(B, 1, *P)`` in {0, 1} dilated by a ball of ``margin`` voxels (float)."""
    if margin <= 0:
        return (mask > 0.5).to(torch.float32)
    d = mask.ndim - 2
    kernel = ball(margin, d).to(mask.device, torch.float32)[None, None]
    conv = torch.nn.functional.conv2d if d == 2 else torch.nn.functional.conv3d
    return (conv((mask > 0.5).float(), kernel, padding=margin) > 0.5).to(torch.float32)


class InpaintCritics(nn.Module):
    """The inpainter's discriminators as one module: ``global_net`` judges the whole patch,
    ``local`` (optional) a crop around the erase region (see
    :func:`medgan.training.inpaint_step.inpaint_train_step`)."""

    def __init__(self, spatial_dims: int, image_channels: int = 1, ndf: int = 32,
                 local: bool = False) -> None:
        super().__init__()
        self.global_net = InpaintDiscriminator(spatial_dims, image_channels, ndf)
        self.local = InpaintDiscriminator(spatial_dims, image_channels, ndf) if local else None

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """Logits ``(B, K)`` of the global discriminator."""
        return self.global_net(image, mask)


def mm_to_voxels(length_mm: float, spacing_mm: tuple[float, ...] | list[float],
                 spatial_dims: int) -> int:
    """``length_mm`` in voxels of the finest in-plane spacing (x, y), rounded, at least 0."""
    finest = min(float(s) for s in spacing_mm[:2])
    if not finest > 0:
        raise ConfigError(f"spacing_mm must be positive in-plane, not {list(spacing_mm)!r}")
    return max(0, int(round(float(length_mm) / finest)))
