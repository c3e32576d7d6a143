"""Training the lesion inpainter: conditional batches, one D+G step, a small loop and a grid.

Erase-and-restore (Jin et al., MICCAI 2018): from a real patch ``x`` with lesion mask ``M``,
the erase region ``E`` (``M`` dilated by ``erase_margin`` voxels) is blanked and the generator
must restore it. The loss is adversarial (a mask-conditioned PatchGAN, optionally a second one
on a crop around the lesion) plus ``l1_weight`` times the L1 distance to the real voxels inside
``E``. A share of the batch (``empty_fraction``, and every patch without lesion) instead gets an
empty ``M`` and an ``E`` that is a random blob of lesion-free voxels, so the generator also
learns to fill healthy tissue.

``medgan train`` with ``model.kind: inpaint`` runs this step in
:mod:`medgan.training.inpaint_loop` (checkpoints, resume, grids); :func:`train_inpainter` is the
in-memory version for experiments and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from medgan.config import PATCH_SIZES, MedganConfig
from medgan.data.patch_bank import PatchBank
from medgan.errors import ConfigError, DataError
from medgan.models.inpaint import (
    InpaintDiscriminator,
    InpaintGenerator,
    erase_region,
    mm_to_voxels,
)
from medgan.training.losses import LOSS_KINDS, discriminator_loss, generator_loss


@dataclass(frozen=True)
class InpaintSettings:
    """Typed settings of the inpainter and its training (sizes in voxels)."""

    # ---- networks ----
    spatial_dims: int = 2
    patch_size: int = 64
    image_channels: int = 1
    ngf: int = 32
    ndf: int = 32
    local_discriminator: bool = False  # a second critic on the lesion crop
    local_size: int = 32
    noise_channels: int = 8
    # ---- conditional batches ----
    erase_margin: int = 3
    blob_radius: tuple[float, float] = (3.0, 10.0)
    empty_fraction: float = 0.25
    tissue_threshold: float | None = -0.9
    # ---- optimisation ----
    loss: str = "hinge"
    l1_weight: float = 100.0
    betas: tuple[float, float] = (0.5, 0.999)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.spatial_dims not in PATCH_SIZES:
            raise ConfigError(f"spatial_dims must be 2 or 3, not {self.spatial_dims!r}")
        if self.patch_size not in PATCH_SIZES[self.spatial_dims]:
            raise ConfigError(f"patch_size must be one of {PATCH_SIZES[self.spatial_dims]} for "
                              f"spatial_dims={self.spatial_dims}, not {self.patch_size!r}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ConfigError(f"empty_fraction must be a number in [0, 1], not "
                              f"{self.empty_fraction!r}")
        lo, hi = self.blob_radius
        if not 1.0 <= lo <= hi < self.patch_size / 2:
            raise ConfigError(f"blob_radius must be (low, high) with 1 <= low <= high < "
                              f"patch_size / 2, not {self.blob_radius!r}")
        if self.loss not in LOSS_KINDS:
            raise ConfigError(f"loss must be one of {', '.join(LOSS_KINDS)}, not {self.loss!r}")
        if self.l1_weight < 0:
            raise ConfigError(f"l1_weight must be >= 0, not {self.l1_weight!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {self.batch_size!r}")
        if not 8 <= self.local_size <= self.patch_size:
            raise ConfigError(f"local_size must be in [8, patch_size={self.patch_size}], not "
                              f"{self.local_size!r}")

    @classmethod
    def from_config(cls, config: MedganConfig, image_channels: int,
                    spacing_mm: tuple[float, ...]) -> InpaintSettings:
        """The settings a ``model.kind: inpaint`` config describes, with mm converted to voxels
        at ``spacing_mm`` (x, y, z) of the training patches."""
        p, t, d = config.inpaint, config.train, config.spatial_dims
        lo, hi = (mm_to_voxels(r, spacing_mm, d) for r in p.blob_radius_mm)
        hi = min(max(hi, 1), config.data.patch_size // 2 - 1)
        return cls(spatial_dims=d, patch_size=config.data.patch_size,
                   image_channels=image_channels, ngf=config.model.ngf, ndf=config.model.ndf,
                   noise_channels=p.noise_channels,
                   erase_margin=mm_to_voxels(p.erase_margin_mm, spacing_mm, d),
                   empty_fraction=p.empty_fraction, blob_radius=(float(min(max(lo, 1), hi)),
                                                                 float(hi)),
                   tissue_threshold=p.tissue_threshold, l1_weight=p.l1_weight, loss=t.loss,
                   lr_g=t.lr_g, lr_d=t.lr_d, betas=t.betas, batch_size=t.batch_size,
                   local_discriminator=p.local_discriminator, local_size=p.local_size)

    def build_generator(self) -> InpaintGenerator:
        return InpaintGenerator(self.spatial_dims, self.patch_size, self.image_channels,
                                self.ngf, self.noise_channels, self.erase_margin)

    def build_discriminator(self) -> InpaintDiscriminator:
        return InpaintDiscriminator(self.spatial_dims, self.image_channels, self.ndf)


@dataclass
class ConditionalBatch:
    """``x`` real patches ``(B, C, *P)`` in [-1, 1]; ``mask`` M and ``erase`` E ``(B, 1, *P)``
    in {0, 1}; ``empty`` ``(B,)`` True where M was emptied (healthy-tissue restore)."""

    x: Tensor
    mask: Tensor
    erase: Tensor
    empty: Tensor

    @property
    def context(self) -> Tensor:
        """What the generator sees: ``x`` with ``E`` blanked to 0."""
        return self.x * (1.0 - self.erase)


def _blob(shape: tuple[int, ...], allowed: np.ndarray, draws: np.ndarray,
          radius: tuple[float, float]) -> np.ndarray:
    """Ellipsoid (radii from ``radius``) centred on an ``allowed`` voxel picked by ``draws``."""
    d = len(shape)
    flat = np.flatnonzero(allowed)
    if flat.size == 0:
        return np.zeros(shape, bool)
    centre = np.unravel_index(flat[min(int(draws[0] * flat.size), flat.size - 1)], shape)
    radii = radius[0] + draws[1:1 + d] * (radius[1] - radius[0])
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def build_conditional_batch(pairs: Tensor, settings: InpaintSettings,
                            rng: np.random.Generator) -> ConditionalBatch:
    """(context, M, E) from real pairs ``(B, C + 1, *P)`` in [-1, 1] (last channel = mask > 0).

    Every sample uses the same number of draws from ``rng`` (1 + 1 + spatial_dims), in order,
    so sample ``i`` is the same whatever the batch size. Lesion samples: ``M`` = the mask,
    ``E`` = ``M`` dilated by ``erase_margin``. Empty samples (``empty_fraction``, or no lesion):
    ``M`` = 0 and ``E`` = a dilated ellipsoid of lesion-free voxels (at least ``erase_margin``
    + 2 voxels from the lesion; above ``tissue_threshold`` in channel 0 when possible).
    """
    d = settings.spatial_dims
    if pairs.ndim != d + 2 or pairs.shape[1] != settings.image_channels + 1:
        raise DataError(f"pairs must have shape (B, {settings.image_channels + 1}, *P) with "
                        f"{d} spatial axes, not {tuple(pairs.shape)}")
    x, lesion = pairs[:, :-1], (pairs[:, -1:] > 0).float()
    draws = rng.random((pairs.shape[0], 2 + d))
    empty = torch.from_numpy(draws[:, 0] < settings.empty_fraction).to(pairs.device)
    empty |= lesion.flatten(1).amax(1) == 0
    mask = lesion * (~empty).float().reshape(-1, *([1] * (d + 1)))
    erase = erase_region(mask, settings.erase_margin)
    shape = tuple(pairs.shape[2:])
    lesion_np = lesion[:, 0].cpu().numpy() > 0
    image0 = x[:, 0].detach().cpu().numpy()
    for i in np.flatnonzero(empty.cpu().numpy()):
        far = distance_transform_edt(~lesion_np[i]) > settings.erase_margin + 2 \
            if lesion_np[i].any() else np.ones(shape, bool)
        allowed = far
        if settings.tissue_threshold is not None:
            tissue = far & (image0[i] > settings.tissue_threshold)
            allowed = tissue if tissue.any() else far
        blob = torch.from_numpy(_blob(shape, allowed, draws[i, 1:], settings.blob_radius))
        grown = erase_region(blob.float()[None, None].to(pairs.device), settings.erase_margin)[0]
        erase[i] = grown * (~torch.from_numpy(lesion_np[i])).float().to(pairs.device)
    return ConditionalBatch(x, mask, erase, empty)


def restore_l1(fake: Tensor, x: Tensor, erase: Tensor) -> Tensor:
    """Mean absolute error over the voxels of ``E`` (all channels); 0 when ``E`` is empty."""
    weight = erase.expand_as(x)
    return ((fake - x).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def crop_around(t: Tensor, erase: Tensor, size: int) -> Tensor:
    """Crops ``(B, C, *[size] * d)`` of ``t`` ``(B, C, *P)`` centred on each sample's ``E``
    bounding box (the patch centre when ``E`` is empty), kept inside the patch."""
    out = []
    for i in range(t.shape[0]):
        idx = torch.nonzero(erase[i, 0] > 0.5)
        centre = ((idx.amin(0) + idx.amax(0)) // 2).tolist() if len(idx) else \
            [n // 2 for n in t.shape[2:]]
        start = [min(max(c - size // 2, 0), n - size) for c, n in zip(centre, t.shape[2:],
                                                                      strict=True)]
        out.append(t[(i, slice(None), *[slice(s, s + size) for s in start])])
    return torch.stack(out)


def inpaint_train_step(generator: InpaintGenerator, discriminator: InpaintDiscriminator,
                       opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                       batch: ConditionalBatch, noise: Tensor, settings: InpaintSettings,
                       local: InpaintDiscriminator | None = None) -> dict[str, float]:
    """One D update then one G update; returns the scalar losses of the step."""
    local_crop: Callable[[Tensor], Tensor] = lambda t: crop_around(t, batch.erase,  # noqa: E731
                                                                  settings.local_size)
    # ---- D step: real (x, M) vs inpainted (composite, M) ----
    fake = generator(batch.x, batch.mask, batch.erase, noise)  # (B, C, *P)
    loss_d = discriminator_loss(discriminator(batch.x, batch.mask).flatten(),
                                discriminator(fake.detach(), batch.mask).flatten(), settings.loss)
    if local is not None:
        loss_d = loss_d + discriminator_loss(
            local(local_crop(batch.x), local_crop(batch.mask)).flatten(),
            local(local_crop(fake.detach()), local_crop(batch.mask)).flatten(), settings.loss)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # ---- G step: fool D, and restore the erased voxels ----
    loss_adv = generator_loss(discriminator(fake, batch.mask).flatten(), settings.loss)
    if local is not None:
        loss_adv = loss_adv + generator_loss(
            local(local_crop(fake), local_crop(batch.mask)).flatten(), settings.loss)
    loss_l1 = restore_l1(fake, batch.x, batch.erase)
    loss_g = loss_adv + settings.l1_weight * loss_l1
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g_adv": loss_adv.item(), "loss_l1": loss_l1.item()}


def _pairs(source: PatchBank | Tensor, settings: InpaintSettings) -> Tensor:
    pairs = source.pairs() if isinstance(source, PatchBank) else source
    expected = (settings.image_channels + 1, *(settings.patch_size,) * settings.spatial_dims)
    if pairs.ndim != settings.spatial_dims + 2 or tuple(pairs.shape[1:]) != expected:
        raise DataError(f"patches must have shape (N, {', '.join(map(str, expected))}) for "
                        f"these settings, not {tuple(pairs.shape)}")
    if len(pairs) == 0:
        raise DataError("patches is empty: no patch to train the inpainter on")
    return pairs.float()


def train_inpainter(source: PatchBank | Tensor, settings: InpaintSettings, steps: int,
                    seed: int = 0, device: str | torch.device = "cpu",
                    history: list[dict[str, float]] | None = None) -> InpaintGenerator:
    """Train an inpainter for ``steps`` D+G steps on a patch bank or pairs ``(N, C + 1, *P)``.

    Weights, minibatches, masks and noise all follow ``seed``. Each step's losses are appended
    to ``history`` when given. Returns the generator in eval mode; writes nothing.
    """
    if steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, not {steps!r}")
    dev = torch.device(device)
    pairs = _pairs(source, settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen, disc = settings.build_generator().to(dev), settings.build_discriminator().to(dev)
        local = settings.build_discriminator().to(dev) if settings.local_discriminator else None
    d_params = list(disc.parameters()) + (list(local.parameters()) if local else [])
    opt_g = torch.optim.Adam(gen.parameters(), lr=settings.lr_g, betas=settings.betas)
    opt_d = torch.optim.Adam(d_params, lr=settings.lr_d, betas=settings.betas)
    rng = np.random.default_rng(seed)
    noise_rng = torch.Generator().manual_seed(seed)
    gen.train()
    for _ in range(steps):
        rows = torch.from_numpy(rng.integers(0, len(pairs), settings.batch_size))
        batch = build_conditional_batch(pairs[rows].to(dev), settings, rng)
        noise = gen.sample_noise(settings.batch_size, noise_rng, device=dev)
        losses = inpaint_train_step(gen, disc, opt_g, opt_d, batch, noise, settings, local)
        if history is not None:
            history.append(losses)
    return gen.eval()


@torch.no_grad()
def inpaint_grid(generator: InpaintGenerator, pairs: Tensor, settings: InpaintSettings,
                 seed: int = 0) -> Tensor:
    """Tiles ``(4 * N, C + 1, *P)`` per sample: context (E outlined) | inpainted (M outlined) |
    real (M outlined) | mask, for :func:`medgan.visualize.save_grid` with ``nrow=4``."""
    dev = next(generator.parameters()).device
    batch = build_conditional_batch(pairs.float().to(dev), settings, np.random.default_rng(seed))
    noise = generator.sample_noise(len(pairs), torch.Generator().manual_seed(seed), device=dev)
    fake = generator.eval()(batch.x, batch.mask, batch.erase, noise)
    sign = lambda m: m * 2.0 - 1.0  # noqa: E731  {0, 1} -> {-1, 1}, the grid's mask convention
    tiles = []
    for i in range(len(pairs)):
        m, e = batch.mask[i:i + 1], batch.erase[i:i + 1]
        tiles += [torch.cat([batch.context[i:i + 1], sign(e)], 1),
                  torch.cat([fake[i:i + 1], sign(m)], 1),
                  torch.cat([batch.x[i:i + 1], sign(m)], 1),
                  torch.cat([sign(m).expand_as(batch.x[i:i + 1]), -torch.ones_like(m)], 1)]
    return torch.cat(tiles).cpu()


def save_inpaint_grid(generator: InpaintGenerator, pairs: Tensor, path: str | Path,
                      settings: InpaintSettings, seed: int = 0) -> Path:
    """Write :func:`inpaint_grid` as a PNG (one sample per row, four columns)."""
    from medgan.visualize import save_grid

    return save_grid(inpaint_grid(generator, pairs, settings, seed), path, nrow=4)
