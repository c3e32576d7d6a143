"""DCGAN generator and discriminator (Radford et al., 2016) for 2D and 3D patches.

One class serves both ranks: layers come from MONAI's factories
(``Conv[Conv.CONVTRANS, spatial_dims]``, ``Norm[Norm.BATCH, spatial_dims]``) and blocks
(``UpSample``), so 2D and 3D share every line. The generator doubles its feature maps either with
transposed convolutions (``upsample="deconv"``, the DCGAN paper's choice) or by nearest-neighbour
resizing followed by a kernel-3 convolution (``upsample="resize"``, Odena et al., "Deconvolution
and checkerboard artifacts", Distill 2016), which avoids the checkerboard pattern of strided
transposed convolutions. The generator returns the image channels followed by one lesion-mask
channel, all in ``[-1, 1]`` (``mask = output[:, -1] > 0``). The discriminator returns raw logits
``(B,)``.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv, Norm
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from medgan.config import DISCRIMINATOR_NORMS, PATCH_SIZES, UPSAMPLE_MODES
from medgan.errors import ConfigError


def check_size(spatial_dims: int, size: int, name: str) -> int:
    """Validate ``spatial_dims`` and a patch ``size``; returns the number of 2x stages."""
    if spatial_dims not in PATCH_SIZES:
        raise ConfigError(f"spatial_dims must be 2 or 3, not {spatial_dims!r}")
    allowed = PATCH_SIZES[spatial_dims]
    if isinstance(size, bool) or size not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))} for "
                          f"spatial_dims={spatial_dims}, not {size!r}")
    return int(math.log2(size)) - 2


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def init_dcgan_weights(module: nn.Module) -> nn.Module:
    """DCGAN initialisation of every layer in ``module``, in place; returns ``module``.

    Conv / transposed-conv weights ~ N(0, 0.02) and biases 0; affine norm weights ~ N(1, 0.02)
    and biases 0. For spectral-normalised convs the original (unnormalised) weight is drawn;
    their power-iteration vectors re-converge during the first training forwards.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _ConvNd):
                if parametrize.is_parametrized(m, "weight"):
                    weight = m.parametrizations.weight.original
                else:
                    weight = m.weight
                nn.init.normal_(weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NormBase) and m.affine:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    """Latent ``z (B, latent_dim)`` -> ``(B, image_channels + 1, *[out_size] * spatial_dims)``.

    A ``4^d`` seed with ``ngf * 2^(n-1)`` channels (``n = log2(out_size) - 2``) is doubled in
    size and halved in channels ``n`` times; the last stage maps ``ngf`` channels to the image
    channels plus the mask channel, followed by tanh. ``upsample`` picks how each stage doubles
    the size: ``"deconv"`` (transposed conv, kernel 4, stride 2) or ``"resize"`` (nearest-
    neighbour x2, then conv with kernel 3: ``3^d / 4^d`` of the deconv stage's weights, about
    ``9 / 4`` (2D) or ``27 / 8`` (3D) times its multiply-adds). The seed layer (a transposed
    conv from ``1^d`` to ``4^d``, i.e. a linear projection) is the same for both.
    """

    def __init__(self, spatial_dims: int, out_size: int, image_channels: int = 1,
                 latent_dim: int = 100, ngf: int = 64, upsample: str = "deconv") -> None:
        super().__init__()
        n = check_size(spatial_dims, out_size, "out_size")
        _check_positive(image_channels=image_channels, latent_dim=latent_dim, ngf=ngf)
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, "
                              f"not {upsample!r}")
        self.spatial_dims = spatial_dims
        self.out_size = out_size
        self.image_channels = image_channels
        self.latent_dim = latent_dim
        self.upsample = upsample
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        norm = Norm[Norm.BATCH, spatial_dims]
        ch = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [  # (B, latent_dim, 1, 1) -> (B, ngf*2^(n-1), 4, 4)
            conv_t(latent_dim, ch, 4, 1, 0, bias=False), norm(ch), nn.ReLU(True)
        ]
        for _ in range(n - 1):  # (B, ch, s, s) -> (B, ch/2, 2s, 2s), down to (B, ngf, S/2, S/2)
            layers += [self._up(ch, ch // 2, bias=False), norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [self._up(ch, image_channels + 1, bias=True), nn.Tanh()]  # (B, C + 1, S, S)
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def _up(self, c_in: int, c_out: int, bias: bool) -> nn.Module:
        """One x2 stage ``(B, c_in, *s)`` -> ``(B, c_out, *2s)`` of kind ``self.upsample``."""
        if self.upsample == "deconv":
            return Conv[Conv.CONVTRANS, self.spatial_dims](c_in, c_out, 4, 2, 1, bias=bias)
        conv = Conv[Conv.CONV, self.spatial_dims](c_in, c_out, 3, 1, 1, bias=bias)
        return UpSample(self.spatial_dims, scale_factor=2, mode="nontrainable", pre_conv=None,
                        post_conv=conv, interp_mode="nearest", align_corners=None)

    def forward(self, z: Tensor) -> Tensor:
        """``z (B, latent_dim)`` -> ``(B, image_channels + 1, *spatial)`` in [-1, 1]."""
        return self.net(z.reshape(*z.shape, *([1] * self.spatial_dims)))

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """``n`` latents ``(n, latent_dim)`` ~ N(0, 1), drawn on ``generator``'s device.

        The result is moved to ``device`` (default: the generator's device, else the CPU), so a
        CPU generator gives the same latents whatever device the model runs on.
        """
        draw_device = generator.device if generator is not None else device
        z = torch.randn(n, self.latent_dim, generator=generator, device=draw_device)
        return z if device is None else z.to(device)


class MinibatchStd(nn.Module):
    """Append the minibatch standard deviation as one extra feature map (Karras et al., ProGAN).

    The batch is split into groups of ``min(group_size, B)`` samples (the largest divisor of
    ``B`` not above it); within each group the std across samples is averaged over features and
    positions, and broadcast as a constant map: ``(B, C, *S)`` -> ``(B, C + 1, *S)``. Groups of
    one sample (e.g. ``B = 1``) give a zero map.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        b, _, *spatial = x.shape
        g = min(self.group_size, b)
        while b % g:
            g -= 1
        if g == 1:
            stat = x.new_zeros(b, 1, *spatial)
        else:
            y = x.float().reshape(g, b // g, -1)  # (G, B/G, C*prod(S)); sample i in group i % (B/G)
            std = torch.sqrt(y.var(dim=0, unbiased=False) + self.eps)  # (B/G, C*prod(S))
            stat = std.mean(dim=1).to(x.dtype).repeat(g)  # (B,)
            stat = stat.reshape(b, 1, *([1] * len(spatial))).expand(b, 1, *spatial)
        return torch.cat([x, stat], dim=1)


class Discriminator(nn.Module):
    """``(B, in_channels, *[in_size] * spatial_dims)`` -> raw logits ``(B,)`` (no sigmoid).

    Strided convs (kernel 4, stride 2) with LeakyReLU(0.2) take ``ndf`` channels to
    ``ndf * 2^(n-1)`` at ``4^d``; a final kernel-4 conv gives one logit. ``norm`` follows every
    conv but the first; ``spectral_norm`` wraps every conv; ``minibatch_std`` adds a
    :class:`MinibatchStd` map before the final conv; ``dropout`` follows every LeakyReLU but
    the last.
    """

    def __init__(self, spatial_dims: int, in_size: int, in_channels: int, ndf: int = 64,
                 norm: str = "batch", spectral_norm: bool = False, minibatch_std: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        n = check_size(spatial_dims, in_size, "in_size")
        _check_positive(in_channels=in_channels, ndf=ndf)
        if norm not in DISCRIMINATOR_NORMS:
            raise ConfigError(f"norm must be one of {', '.join(DISCRIMINATOR_NORMS)}, "
                              f"not {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be a probability in [0, 1), not {dropout!r}")
        self.spatial_dims = spatial_dims
        self.in_size = in_size
        self.in_channels = in_channels
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        c_in, c_out = in_channels, ndf
        for i in range(n):  # (B, c_in, s, s) -> (B, c_out, s/2, s/2), ending at (B, ., 4, 4)
            normed = i > 0 and norm != "none"
            layers.append(conv(c_in, c_out, 4, 2, 1, bias=not normed))
            if normed:
                layers.append(self._norm(norm, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))  # no copy of the activations
            if dropout > 0 and i < n - 1:
                layers.append(nn.Dropout(dropout))
            c_in, c_out = c_out, c_out * 2
        if minibatch_std:
            layers.append(MinibatchStd())  # (B, c_in + 1, 4, 4)
            c_in += 1
        layers.append(conv(c_in, 1, 4, 1, 0))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)
        if spectral_norm:  # after init, so the power iteration starts from the final weights
            for m in [m for m in self.modules() if isinstance(m, _ConvNd)]:
                _spectral_norm(m)

    def _norm(self, kind: str, channels: int) -> nn.Module:
        if kind == "batch":
            return Norm[Norm.BATCH, self.spatial_dims](channels)
        return Norm[Norm.INSTANCE, self.spatial_dims](channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, in_channels, *spatial)`` -> logits ``(B,)``."""
        return self.net(x).reshape(x.shape[0])
