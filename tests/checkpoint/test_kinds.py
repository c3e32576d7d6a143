"""medgan.checkpoint.kinds: the model-kind registry and the networks it builds."""

from __future__ import annotations

import pytest
import torch
from helpers_data import config_dict

from medgan.checkpoint import kinds
from medgan.checkpoint.kinds import (
    KINDS,
    ModelKind,
    build_discriminator,
    build_generator,
    get_kind,
    register_kind,
)
from medgan.config import MODEL_KINDS, config_from_dict
from medgan.errors import ConfigError
from medgan.models import Discriminator, Generator


def config(spatial_dims: int = 2, patch_size: int = 32, **model):
    raw = config_dict("ct", spatial_dims, patch_size=patch_size)
    raw["model"] = {"latent_dim": 8, "ngf": 4, "ndf": 4, **model}
    return config_from_dict(raw)


def test_dcgan_is_registered() -> None:
    kind = get_kind("dcgan")
    assert KINDS["dcgan"] is kind and kind.name == "dcgan" and kind.description
    assert set(MODEL_KINDS) <= set(KINDS)


@pytest.mark.parametrize("name", ["vae", "DCGAN", ""])
def test_get_kind_names_the_choices(name) -> None:
    with pytest.raises(ConfigError) as err:
        get_kind(name)
    assert str(err.value) == f"model kind must be one of {', '.join(KINDS)}, not {name!r}"


@pytest.fixture
def scratch_kind():
    """A kind registered for one test and removed afterwards."""
    kind = ModelKind("test-kind", lambda c, n: torch.nn.Identity(),
                     lambda c, n: torch.nn.Identity())
    yield kind
    KINDS.pop(kind.name, None)


def test_register_kind_refuses_duplicates(scratch_kind) -> None:
    assert register_kind(scratch_kind) is scratch_kind and get_kind("test-kind") is scratch_kind
    again = ModelKind("test-kind", scratch_kind.discriminator, scratch_kind.generator)
    with pytest.raises(ConfigError, match="model kind 'test-kind' is already registered"):
        register_kind(again)
    assert KINDS["test-kind"] is scratch_kind


def test_dcgan_cannot_be_replaced() -> None:
    original = KINDS["dcgan"]
    with pytest.raises(ConfigError, match="already registered"):
        register_kind(ModelKind("dcgan", original.discriminator, original.generator))
    assert KINDS["dcgan"] is original


def test_builders_dispatch_on_config_model_kind(monkeypatch) -> None:
    calls = []

    def fake(role):
        def build(cfg, image_channels):
            calls.append((role, cfg.model.kind, image_channels))
            return torch.nn.Identity()
        return build

    monkeypatch.setitem(kinds.KINDS, "dcgan", ModelKind("dcgan", fake("G"), fake("D")))
    build_generator(config(), 2)
    build_discriminator(config(), 3)
    assert calls == [("G", "dcgan", 2), ("D", "dcgan", 3)]


@pytest.mark.parametrize(("spatial_dims", "patch_size", "channels"), [
    (2, 32, 1), (2, 64, 2), (3, 32, 1), (3, 32, 2),
])
def test_dcgan_networks_fit_the_config(spatial_dims, patch_size, channels) -> None:
    cfg = config(spatial_dims, patch_size)
    g, d = build_generator(cfg, channels), build_discriminator(cfg, channels)
    assert isinstance(g, Generator) and isinstance(d, Discriminator)
    z = g.sample_latent(4, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4, 8)
    pairs = g(z)
    assert pairs.shape == (4, channels + 1, *(patch_size,) * spatial_dims)  # images, then mask
    assert pairs.abs().max() <= 1.0
    assert d(pairs).shape == (4,)  # one logit per pair


def test_dcgan_discriminator_follows_the_model_settings() -> None:
    plain = build_discriminator(config(spectral_norm=False, d_norm="batch"), 1)
    sn = build_discriminator(config(spectral_norm=True, d_norm="instance"), 1)
    def spectral(model):
        return [m for m in model.modules() if torch.nn.utils.parametrize.is_parametrized(m)]

    assert spectral(sn) and not spectral(plain)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in sn.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_fresh_networks_follow_the_torch_seed() -> None:
    def weights():
        torch.manual_seed(3)
        return build_generator(config(), 1).state_dict()

    a, b = weights(), weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
