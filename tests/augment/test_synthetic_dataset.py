"""SyntheticLesionDataset and mix_real_synthetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import Compose, ScaleIntensityd

from medgan.augment import SyntheticLesionDataset, load_generator, mix_real_synthetic
from medgan.errors import ConfigError
from medgan.sampling import sample_seed


@pytest.fixture(scope="module")
def loaded(ckpt_2d):
    return load_generator(ckpt_2d)


def test_item_layout(loaded):
    ds = SyntheticLesionDataset(loaded, num_samples=4, seed=3)
    assert len(ds) == 4
    item = ds[1]
    assert set(item) == {"image", "label", "synthetic", "seed"}
    image, label = item["image"], item["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.shape == (1, 32, 32) and label.shape == (1, 32, 32)
    assert image.dtype == label.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert set(label.unique().tolist()) <= {0.0, 1.0} and label.sum() > 0
    np.testing.assert_allclose(image.affine.numpy(), np.diag([1.5, 1.5, 3.0, 1.0]))
    np.testing.assert_allclose(label.affine.numpy(), np.diag([1.5, 1.5, 3.0, 1.0]))
    assert item["synthetic"] is True and image.meta["synthetic"] is True
    assert item["seed"] in {sample_seed(3, 1, a) for a in range(20)}


def test_items_are_deterministic(loaded):
    a = SyntheticLesionDataset(loaded, num_samples=3, seed=0)
    b = SyntheticLesionDataset(loaded, num_samples=3, seed=0)
    for i in (2, 0):
        torch.testing.assert_close(a[i]["image"].as_tensor(), b[i]["image"].as_tensor())
        torch.testing.assert_close(a[i]["image"].as_tensor(), a[i]["image"].as_tensor())
    c = SyntheticLesionDataset(loaded, num_samples=3, seed=1)
    assert not torch.equal(a[0]["image"].as_tensor(), c[0]["image"].as_tensor())
    assert a[-1]["seed"] == a[2]["seed"]
    with pytest.raises(IndexError):
        a[3]


def test_cache_matches_generate_bit_for_bit_and_on_demand_closely(loaded):
    cached = SyntheticLesionDataset(loaded, num_samples=5, seed=2, cache=True)
    lazy = SyntheticLesionDataset(loaded, num_samples=5, seed=2)
    for i in range(5):
        c = cached[i]
        again = loaded.generate(1, seed=c["seed"])[0, :1]
        assert torch.equal(c["image"].as_tensor(), again)
        torch.testing.assert_close(lazy[i]["image"].as_tensor(), again, atol=1e-5, rtol=0)
    cached[0]["image"].fill_(5.0)  # items are copies: the cache is not modified
    assert cached[0]["image"].max() <= 1


def test_physical_units_and_transform(loaded):
    model = SyntheticLesionDataset(loaded, num_samples=2, seed=0)
    hu = SyntheticLesionDataset(loaded, num_samples=2, seed=0, units="physical")
    expected = loaded.intensity.inverse(model[0]["image"].as_tensor())
    torch.testing.assert_close(hu[0]["image"].as_tensor(), torch.as_tensor(expected))
    assert hu[0]["image"].min() >= -200 and hu[0]["image"].max() <= 300
    scaled = SyntheticLesionDataset(
        loaded, num_samples=2, seed=0, units="physical",
        transform=Compose([ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)]))
    item = scaled[0]
    assert float(item["image"].min()) == pytest.approx(0.0)
    assert float(item["image"].max()) == pytest.approx(1.0)
    torch.testing.assert_close(item["label"], hu[0]["label"])
    with pytest.raises(ConfigError, match="units must be"):
        SyntheticLesionDataset(loaded, num_samples=2, units="hu")


def test_checkpoint_path_is_accepted(ckpt_2d):
    ds = SyntheticLesionDataset(ckpt_2d, num_samples=1)
    assert ds[0]["image"].shape == (1, 32, 32)


class _Real(torch.utils.data.Dataset):
    """Real-looking dict items with the same shapes as the synthetic ones."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image = MetaTensor(torch.full((1, 32, 32), float(i) / self.n), affine=torch.eye(4))
        return {"image": image, "label": MetaTensor(torch.zeros(1, 32, 32), affine=torch.eye(4))}


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_mixing_ratio(loaded, fraction):
    real = _Real(30)
    synthetic = SyntheticLesionDataset(loaded, num_samples=10)
    g = torch.Generator().manual_seed(0)
    dataset, sampler = mix_real_synthetic(real, synthetic, fraction, num_samples=4000,
                                          generator=g)
    assert len(dataset) == 40
    indices = torch.tensor(list(sampler))
    assert len(indices) == 4000
    share = float((indices >= 30).float().mean())
    assert share == pytest.approx(fraction, abs=0.03)


def test_mixed_batches_collate(loaded):
    real = _Real(6)
    synthetic = SyntheticLesionDataset(loaded, num_samples=4, seed=0, cache=True)
    dataset, sampler = mix_real_synthetic(real, synthetic, 0.5,
                                          generator=torch.Generator().manual_seed(1))
    assert len(sampler) == 12  # each real item about once per epoch
    batch = next(iter(DataLoader(dataset, batch_size=8, sampler=sampler)))
    assert batch["image"].shape == (8, 1, 32, 32)
    assert batch["synthetic"].dtype == torch.bool
    assert 0 < int(batch["synthetic"].sum()) < 8
    assert (batch["seed"][~batch["synthetic"]] == -1).all()


def test_mixing_errors(loaded):
    synthetic = SyntheticLesionDataset(loaded, num_samples=2)
    with pytest.raises(ConfigError, match=r"synthetic_fraction must be a number in \[0, 1\], "
                                          r"not 1.5"):
        mix_real_synthetic(_Real(3), synthetic, 1.5)
    with pytest.raises(ConfigError, match="real dataset is empty"):
        mix_real_synthetic(_Real(0), synthetic, 0.5)
    dataset, sampler = mix_real_synthetic(_Real(0), synthetic, 1.0)
    assert len(sampler) == 2
