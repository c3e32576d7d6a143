"""Inpainter training: conditional batches, the D+G step, the small loop and its grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt

from medgan.errors import ConfigError, DataError
from medgan.training.inpaint_step import (
    InpaintSettings,
    build_conditional_batch,
    crop_around,
    restore_l1,
    save_inpaint_grid,
    train_inpainter,
)


def phantom_pairs(n: int, spatial_dims: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Pairs ``(n, 2, *P)`` in [-1, 1]: smooth tissue with a bright ball lesion in most."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * spatial_dims,
                                indexing="ij"))
    out = []
    for i in range(n):
        tissue = -0.2 + 0.1 * np.sin(grid[0] * rng.uniform(0.1, 0.3) + rng.uniform(0, 6))
        centre = rng.uniform(size * 0.35, size * 0.65, spatial_dims)
        r = rng.uniform(3, 6)
        ball = np.sqrt(((grid - centre.reshape(-1, *([1] * spatial_dims))) ** 2).sum(0)) <= r
        if i % 4 == 3:
            ball[:] = False  # a lesion-free patch
        image = np.where(ball, 0.6, tissue) + rng.normal(0, 0.02, tissue.shape)
        out.append(np.stack([image, ball * 2.0 - 1.0]))
    return torch.from_numpy(np.stack(out)).float()


def _settings(**kw) -> InpaintSettings:
    base = dict(spatial_dims=2, patch_size=32, ngf=8, ndf=8, batch_size=8, blob_radius=(2.0, 5.0),
                noise_channels=2)
    return InpaintSettings(**{**base, **kw})


def test_conditional_batch_lesion_and_empty_samples():
    pairs = phantom_pairs(16)
    s = _settings(empty_fraction=0.3)
    b = build_conditional_batch(pairs, s, np.random.default_rng(0))
    lesion = pairs[:, -1:] > 0
    for i in range(16):
        m, e, les = b.mask[i, 0].numpy() > 0, b.erase[i, 0].numpy() > 0, lesion[i, 0].numpy()
        assert e.any()
        if b.empty[i]:  # healthy-tissue restore: no mask, erase region away from the lesion
            assert not m.any() and not (e & les).any()
        else:
            np.testing.assert_array_equal(m, les)
            np.testing.assert_array_equal(e, distance_transform_edt(~m) <= s.erase_margin)
    assert b.empty[3] and b.empty.sum() > 4  # lesion-free patches always get empty masks
    assert torch.equal(b.context, b.x * (1 - b.erase))


def test_conditional_batch_is_the_same_at_any_batch_size():
    pairs = phantom_pairs(12)
    s = _settings(empty_fraction=0.5)
    a = build_conditional_batch(pairs[:5], s, np.random.default_rng(7))
    b = build_conditional_batch(pairs, s, np.random.default_rng(7))
    assert torch.equal(a.erase, b.erase[:5]) and torch.equal(a.mask, b.mask[:5])
    c = build_conditional_batch(pairs, s, np.random.default_rng(8))
    assert not torch.equal(c.erase, b.erase)


def test_bad_inputs_and_settings_are_named():
    with pytest.raises(DataError, match=r"pairs must have shape \(B, 2, \*P\)"):
        build_conditional_batch(torch.zeros(2, 3, 32, 32), _settings(), np.random.default_rng(0))
    with pytest.raises(DataError, match="patches must have shape"):
        train_inpainter(torch.zeros(4, 2, 64, 64), _settings(), 1)
    with pytest.raises(DataError, match="patches is empty"):
        train_inpainter(torch.zeros(0, 2, 32, 32), _settings(), 1)
    with pytest.raises(ConfigError, match="empty_fraction must be a number in"):
        _settings(empty_fraction=1.5)
    with pytest.raises(ConfigError, match="patch_size must be one of"):
        _settings(patch_size=48)
    with pytest.raises(ConfigError, match="loss must be one of"):
        _settings(loss="l2")
    with pytest.raises(ConfigError, match="blob_radius must be"):
        _settings(blob_radius=(5.0, 20.0))


def test_training_decreases_the_restore_loss():
    pairs = phantom_pairs(32)
    s = _settings(l1_weight=100.0, batch_size=8, lr_g=1e-3, lr_d=1e-3)
    held = build_conditional_batch(phantom_pairs(8, seed=1), s, np.random.default_rng(5))

    def held_l1(gen):
        noise = gen.sample_noise(8, torch.Generator().manual_seed(0))
        with torch.no_grad():
            return float(restore_l1(gen(held.x, held.mask, held.erase, noise), held.x,
                                    held.erase))

    history = []
    before = held_l1(train_inpainter(pairs, s, 0, seed=0))
    after = held_l1(train_inpainter(pairs, s, 60, seed=0, history=history))
    assert len(history) == 60 and {"loss_d", "loss_g_adv", "loss_l1"} <= set(history[0])
    assert after < 0.75 * before, (before, after)  # on held-out patches, in eval mode
    first = np.mean([h["loss_l1"] for h in history[:10]])
    assert np.mean([h["loss_l1"] for h in history[-10:]]) < 0.6 * first


def test_same_seed_same_generator_and_3d_with_local_discriminator():
    pairs = phantom_pairs(8)
    a = train_inpainter(pairs, _settings(), 2, seed=3)
    b = train_inpainter(pairs, _settings(), 2, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    s3 = _settings(spatial_dims=3, ngf=4, ndf=4, batch_size=2, local_discriminator=True,
                   local_size=16)
    history = []
    gen = train_inpainter(phantom_pairs(4, spatial_dims=3), s3, 2, seed=0, history=history)
    assert not gen.training and all(np.isfinite(list(h.values())).all() for h in history)


def test_crop_around_follows_the_erase_region():
    t = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).repeat(2, 1, 1, 1)
    erase = torch.zeros(2, 1, 32, 32)
    erase[0, 0, 28:31, 1:4] = 1  # near a corner: the crop is kept inside the patch
    crops = crop_around(t, erase, 8)
    assert crops.shape == (2, 1, 8, 8)
    assert torch.equal(crops[0], t[0, :, 24:32, 0:8])
    assert torch.equal(crops[1], t[1, :, 12:20, 12:20])  # empty erase: the centre


def test_grid_png(tmp_path):
    pairs = phantom_pairs(3)
    s = _settings()
    gen = train_inpainter(pairs, s, 1, seed=0)
    path = save_inpaint_grid(gen, pairs, tmp_path / "grid.png", s)
    with Image.open(path) as im:
        w, h = im.size
    assert abs(w / h - 4 / 3) < 0.05  # four columns, three rows of square tiles
