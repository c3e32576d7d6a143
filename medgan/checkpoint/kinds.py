"""Model kinds: how to build the networks a checkpoint describes.

The names a config may use are :data:`medgan.config.MODEL_KINDS` (torch-free, for validation);
each is registered here once with the functions that build its generator and discriminator from a
config; training creates the networks through :func:`build_generator` /
:func:`build_discriminator`, and sampling rebuilds the generator of a checkpoint the same way,
so the two can never disagree about an architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from medgan.config import MedganConfig
from medgan.errors import ConfigError
from medgan.models import Discriminator, Generator
from medgan.models.inpaint import InpaintCritics, InpaintGenerator

Builder = Callable[[MedganConfig, int], nn.Module]


@dataclass(frozen=True)
class ModelKind:
    """``generator(config, image_channels)`` and ``discriminator(config, image_channels)``."""

    name: str
    generator: Builder
    discriminator: Builder
    description: str = ""


KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry (a name may be registered once)."""
    if kind.name in KINDS:
        raise ConfigError(f"model kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ModelKind:
    if name not in KINDS:
        raise ConfigError(f"model kind must be one of {', '.join(KINDS)}, not {name!r}")
    return KINDS[name]


def build_generator(config: MedganConfig, image_channels: int) -> nn.Module:
    """The (freshly initialised) generator of ``config.model.kind``."""
    return get_kind(config.model.kind).generator(config, image_channels)


def build_discriminator(config: MedganConfig, image_channels: int) -> nn.Module:
    """The (freshly initialised) discriminator of ``config.model.kind``."""
    return get_kind(config.model.kind).discriminator(config, image_channels)


def _dcgan_generator(config: MedganConfig, image_channels: int) -> Generator:
    return Generator(config.spatial_dims, config.data.patch_size, image_channels=image_channels,
                     latent_dim=config.model.latent_dim, ngf=config.model.ngf,
                     upsample=config.model.upsample)


def _dcgan_discriminator(config: MedganConfig, image_channels: int) -> Discriminator:
    m = config.model
    return Discriminator(config.spatial_dims, config.data.patch_size, image_channels + 1,
                         ndf=m.ndf, norm=m.d_norm, spectral_norm=m.spectral_norm,
                         minibatch_std=m.minibatch_std, dropout=m.d_dropout)


register_kind(ModelKind("dcgan", _dcgan_generator, _dcgan_discriminator,
                        "unconditional DCGAN: latent vector -> lesion image + mask patch"))


def _inpaint_generator(config: MedganConfig, image_channels: int) -> InpaintGenerator:
    # erase_margin is recorded on the net for its users; training and loading set it in voxels
    # from inpaint.erase_margin_mm and the patches' spacing (see mm_to_voxels)
    return InpaintGenerator(config.spatial_dims, config.data.patch_size, image_channels,
                            ngf=config.model.ngf, noise_channels=config.inpaint.noise_channels)


def _inpaint_discriminator(config: MedganConfig, image_channels: int) -> InpaintCritics:
    return InpaintCritics(config.spatial_dims, image_channels, ndf=config.model.ndf,
                          local=config.inpaint.local_discriminator)


register_kind(ModelKind("inpaint", _inpaint_generator, _inpaint_discriminator,
                        "lesion inpainter: real patch with an erased region + lesion mask -> "
                        "the region restored with a lesion of that shape"))
