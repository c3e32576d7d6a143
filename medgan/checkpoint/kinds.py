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
