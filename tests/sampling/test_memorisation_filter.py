"""Nearest-real-patch NCC search and the ``max_similarity`` filter of ``sample``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medgan.config import config_from_dict
from medgan.data import build_patch_bank, load_datalist
from medgan.errors import CheckpointError
from medgan.sampling import load_generator, sample
from medgan.similarity import nearest_real_patches


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 8, 8, 8)])
def test_copied_patch_is_found_with_ncc_one(shape):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, *shape, generator=g) * 2 - 1
    synthetic = torch.stack([
        real[3].clone(),                 # exact copy
        real[17] * 0.5 + 0.2,            # copy with other brightness/contrast
        torch.rand(shape, generator=g),  # unrelated
    ])
    idx, ncc = nearest_real_patches(synthetic, real)
    assert idx[:2].tolist() == [3, 17]
    torch.testing.assert_close(ncc[:2], torch.ones(2), atol=1e-5, rtol=0)
    assert ncc[2] < 0.5
    idx_c, ncc_c = nearest_real_patches(synthetic, real, chunk_size=2)  # chunked == whole
    assert torch.equal(idx_c, idx)
    torch.testing.assert_close(ncc_c, ncc)


def test_matches_brute_force_and_handles_constant_patches():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(25, 1, 6, 6, generator=g)
    real[4] = 0.7  # constant: correlation undefined -> 0, never NaN
    synthetic = torch.randn(9, 1, 6, 6, generator=g)
    synthetic[0] = -0.2
    idx, ncc = nearest_real_patches(synthetic, real, chunk_size=4)
    assert torch.isfinite(ncc).all() and ncc[0] == 0
    a = synthetic.reshape(9, -1).double().numpy()
    b = real.reshape(25, -1).double().numpy()
    for i in range(1, 9):
        corr = [np.corrcoef(a[i], b[j])[0, 1] if b[j].std() > 0 else 0.0 for j in range(25)]
        assert idx[i] == int(np.argmax(corr))
        assert ncc[i] == pytest.approx(max(corr), abs=1e-5)
    with pytest.raises(ValueError, match="same"):
        nearest_real_patches(synthetic, real[:, :, :3])


@pytest.fixture
def phantom_datalist(make_dataset):
    """Two CT phantoms (tests/conftest.py) as a decathlon dataset.json."""
    return make_dataset(n=2)


def _real_bank(loaded, datalist):
    config = config_from_dict(loaded.metadata["config"])
    return build_patch_bank(load_datalist(datalist), config, seed=0, progress=False)


def test_max_similarity_redraws_too_similar_samples(tmp_path, ckpt_2d, phantom_datalist):
    loaded = load_generator(ckpt_2d)
    real = _real_bank(loaded, phantom_datalist).images
    _, first = nearest_real_patches(loaded.generate(16, seed=0)[:, :1], real)
    threshold = float(first.median())  # about half of all draws are "too similar"
    out = tmp_path / "filtered"
    result = sample(ckpt_2d, 6, out, seed=0, max_similarity=threshold,
                    real_datalist=phantom_datalist, progress=False)
    assert result.n_redrawn_similar > 0
    images = np.stack([np.asarray(nib.load(out / "imagesTr" / f"synth_{i:05d}.nii.gz").dataobj)
                       for i in range(6)])[..., 0]
    model = torch.from_numpy(np.asarray(loaded.intensity.forward(images[None]))[0])
    _, ncc = nearest_real_patches(model[:, None], real)
    assert (ncc <= threshold + 1e-4).all()
    assert json.loads((out / "dataset.json").read_text())["medgan"]["max_similarity"] == threshold


def test_gives_up_when_every_draw_is_too_similar(tmp_path, ckpt_2d, phantom_datalist):
    with pytest.raises(CheckpointError, match="too similar to a real training patch"):
        sample(ckpt_2d, 1, tmp_path / "x", max_similarity=-0.99,
               real_datalist=phantom_datalist, progress=False)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
