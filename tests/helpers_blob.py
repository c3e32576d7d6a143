"""A stand-in generator whose lesion is a ball of known size, for exact geometry checks."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medgan.checkpoint import CheckpointSpec
from medgan.data.intensity import IntensityMapping
from medgan.sampling import LoadedGenerator


class BlobNet(nn.Module):
    """``z (B, latent_dim)`` -> ``(B, C + 1, *[size] * spatial_dims)``: a ball lesion (bright in
    every image channel) on a gently textured background; the ball's centre and radius follow
    ``z``, so different latents give different lesions."""

    def __init__(self, spatial_dims: int, size: int, image_channels: int = 1,
                 latent_dim: int = 4, radius: float | None = None) -> None:
        super().__init__()
        self.spatial_dims, self.size = spatial_dims, size
        self.image_channels, self.latent_dim = image_channels, latent_dim
        self.radius = radius if radius is not None else size / 6

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        draw = generator.device if generator is not None else device
        return torch.randn(n, self.latent_dim, generator=generator, device=draw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d, s = self.spatial_dims, self.size
        axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float32)] * d, indexing="ij")
        grid = torch.stack(axes).to(z.device)  # (d, *P)
        centre = s / 2 + torch.tanh(z[:, :d]) * s / 8  # (B, d)
        radius = self.radius * (1 + 0.2 * torch.tanh(z[:, d]))  # (B,)
        shape = (z.shape[0], d) + (1,) * d
        dist = (grid[None] - centre.reshape(shape)).pow(2).sum(1).sqrt()  # (B, *P)
        mask = torch.tanh(2.0 * (radius.reshape((-1,) + (1,) * d) - dist))
        texture = 0.1 * torch.sin(grid.sum(0) * 0.7)[None] - 0.3
        lesion = (mask > 0).float()
        image = texture * (1 - lesion) + 0.6 * lesion  # lesion brighter than surroundings
        return torch.cat([image[:, None]] * self.image_channels + [mask[:, None]], dim=1)


def blob_generator(spatial_dims: int = 2, size: int = 16, image_channels: int = 1,
                   radius: float | None = None) -> LoadedGenerator:
    """A :class:`LoadedGenerator` around :class:`BlobNet` (CT, HU window -200..300)."""
    net = BlobNet(spatial_dims, size, image_channels, radius=radius).eval()
    intensity = IntensityMapping("ct", (-200.0,) * image_channels, (300.0,) * image_channels)
    spec = CheckpointSpec(kind="blob", modality="ct", spatial_dims=spatial_dims,
                          patch_size=size, latent_dim=net.latent_dim,
                          image_channels=image_channels, spacing_mm=(1.0, 1.0, 2.0),
                          intensity=intensity.to_dict(), lesion_labels=[1])
    return LoadedGenerator(net, {}, Path("blob"), "b" * 64, torch.device("cpu"), spec=spec)
