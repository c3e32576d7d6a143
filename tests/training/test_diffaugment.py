"""DiffAugment on image + mask batches: shapes, mask handling, geometry, seeds, gradients."""

from __future__ import annotations

import pytest
import torch

from medgan.errors import ConfigError
from medgan.training.diffaugment import DIFFAUGMENT_POLICIES, diff_augment

SPATIAL = [(16, 16), (8, 8, 8)]


def _batch(spatial: tuple[int, ...], b: int = 4, image_channels: int = 2) -> torch.Tensor:
    """``(B, image_channels + 1, *spatial)`` in [-1, 1]; the last channel is a -1/1 mask."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, image_channels, *spatial, generator=g) * 2 - 1
    mask = torch.where(torch.rand(b, 1, *spatial, generator=g) > 0.7, 1.0, -1.0)
    return torch.cat([image, mask], dim=1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("policy", [[p] for p in DIFFAUGMENT_POLICIES] + [DIFFAUGMENT_POLICIES])
def test_shape_and_dtype_preserved(policy: list[str], spatial: tuple[int, ...]) -> None:
    x = _batch(spatial)
    out = diff_augment(x, policy, image_channels=2, generator=_gen())
    assert out.shape == x.shape and out.dtype == x.dtype


def test_empty_policy_returns_input() -> None:
    x = _batch((8, 8))
    assert diff_augment(x, [], image_channels=2) is x


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("policy", ["brightness", "contrast"])
def test_intensity_policies_leave_mask_untouched(policy: str, spatial: tuple[int, ...]) -> None:
    x = _batch(spatial)
    out = diff_augment(x, [policy], image_channels=2, generator=_gen())
    assert torch.equal(out[:, -1], x[:, -1])
    assert not torch.allclose(out[:, :2], x[:, :2])


@pytest.mark.parametrize("spatial", SPATIAL)
def test_brightness_is_one_offset_per_sample(spatial: tuple[int, ...]) -> None:
    x = _batch(spatial)
    delta = (diff_augment(x, ["brightness"], 2, generator=_gen()) - x)[:, :2].flatten(1)
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta))
    assert delta.abs().max() <= 0.5


@pytest.mark.parametrize("spatial", SPATIAL)
def test_contrast_keeps_the_per_sample_mean(spatial: tuple[int, ...]) -> None:
    x = _batch(spatial)
    out = diff_augment(x, ["contrast"], 2, generator=_gen())
    torch.testing.assert_close(out[:, :2].flatten(1).mean(1), x[:, :2].flatten(1).mean(1))
    ratio = out[:, :2].flatten(1).std(1) / x[:, :2].flatten(1).std(1)
    assert ((ratio >= 0.5 - 1e-4) & (ratio <= 1.5 + 1e-4)).all()


@pytest.mark.parametrize("spatial", SPATIAL)
def test_translation_moves_image_and_mask_together(spatial: tuple[int, ...]) -> None:
    b = 16
    x = torch.full((b, 3, *spatial), -1.0)
    centre = tuple(s // 2 for s in spatial)
    x[(slice(None), slice(None), *centre)] = 1.0  # one bright voxel in every channel
    out = diff_augment(x, ["translation"], 2, generator=_gen(), translation_ratio=0.25)
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    moved = 0
    for i in range(b):
        hits = [torch.nonzero(out[i, c] == 1.0) for c in range(3)]
        assert all(len(h) == 1 for h in hits)  # |shift| <= 0.25 * size keeps it inside
        assert all(torch.equal(h, hits[0]) for h in hits)
        shift = hits[0][0] - torch.tensor(centre)
        assert shift.abs().max() <= max(int(0.25 * s + 0.5) for s in spatial)
        moved += int(shift.abs().sum() > 0)
    assert moved > 0


def test_translation_fills_with_background() -> None:
    x = torch.zeros(8, 2, 16, 16)
    out = diff_augment(x, ["translation"], 1, generator=_gen(), translation_ratio=0.25)
    assert set(out.unique().tolist()) == {-1.0, 0.0}
    assert torch.equal(out[:, 0], out[:, 1])


@pytest.mark.parametrize("spatial", SPATIAL)
def test_cutout_erases_all_channels(spatial: tuple[int, ...]) -> None:
    x = torch.ones(6, 3, *spatial)
    out = diff_augment(x, ["cutout"], 2, generator=_gen(), cutout_ratio=0.5)
    assert set(out.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(out[:, 0], out[:, 2]) and torch.equal(out[:, 1], out[:, 2])
    erased = (out[:, -1] == -1.0).flatten(1).sum(1)
    box = 1
    for s in spatial:
        box *= int(0.5 * s + 0.5)
    assert ((erased >= 1) & (erased <= box)).all()


@pytest.mark.parametrize("spatial", SPATIAL)
def test_same_seed_same_output(spatial: tuple[int, ...]) -> None:
    x = _batch(spatial)
    a = diff_augment(x, DIFFAUGMENT_POLICIES, 2, generator=_gen(3))
    b = diff_augment(x, DIFFAUGMENT_POLICIES, 2, generator=_gen(3))
    c = diff_augment(x, DIFFAUGMENT_POLICIES, 2, generator=_gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_gradients_flow(spatial: tuple[int, ...]) -> None:
    x = _batch(spatial).requires_grad_(True)
    out = diff_augment(x, DIFFAUGMENT_POLICIES, 2, generator=_gen())
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bf16_input_and_comma_separated_policy() -> None:
    x = _batch((16, 16)).to(torch.bfloat16)
    out = diff_augment(x, "translation, cutout,brightness,contrast", 2, generator=_gen())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_invalid_arguments() -> None:
    x = _batch((8, 8))
    with pytest.raises(ConfigError, match="translation, cutout, brightness, contrast, not 'flip'"):
        diff_augment(x, ["translation", "flip"], 2)
    with pytest.raises(ConfigError, match="cutout_ratio must be in"):
        diff_augment(x, ["cutout"], 2, cutout_ratio=1.5)
    with pytest.raises(ValueError, match="image_channels=1"):
        diff_augment(x, ["cutout"], 1)
