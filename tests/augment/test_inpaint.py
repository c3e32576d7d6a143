"""RandLesionInpaint(d): exact label, untouched voxels, 2D/3D, types, randomness, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor
from scipy.ndimage import distance_transform_edt

from medgan.augment.inpaint import RandLesionInpaint, RandLesionInpaintd
from medgan.augment.masks import EllipsoidMaskSource
from medgan.augment.placement import PlacementSettings
from medgan.data.intensity import IntensityMapping
from medgan.errors import ConfigError, DataError
from medgan.models.inpaint import InpaintGenerator

HU = IntensityMapping("ct", (-200.0,), (300.0,))
ANYWHERE = PlacementSettings(region="anywhere", margin_mm=2.0)


def _gen(spatial_dims: int = 2, size: int = 32, margin: int = 2) -> InpaintGenerator:
    torch.manual_seed(0)
    return InpaintGenerator(spatial_dims, size, ngf=4, noise_channels=2, erase_margin=margin)


def _source(spatial_dims: int = 2, diameters=(6.0, 9.0)) -> EllipsoidMaskSource:
    return EllipsoidMaskSource(spatial_dims, list(diameters), elastic_mm=0.5)


def _image(spatial: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CT-like image in HU (body 40, noise) and a label with one existing lesion."""
    rng = np.random.default_rng(seed)
    image = (40 + rng.normal(0, 10, (1, *spatial))).astype(np.float32)
    label = np.zeros((1, *spatial), np.uint8)
    label[(0, *[slice(4, 10)] * len(spatial))] = 1
    return image, label


def _check_exact(img, out, lab, new, margin_voxels):
    """Label = old OR placed mask; image changed only within the erase margin of the mask."""
    added = (new[0] > 0) & (lab[0] == 0)
    assert added.any()
    np.testing.assert_array_equal(new[0] > 0, (lab[0] > 0) | added)
    np.testing.assert_array_equal(new[0][lab[0] > 0], lab[0][lab[0] > 0])
    changed = np.asarray(out != img)[0]
    near = distance_transform_edt(~added) <= margin_voxels
    assert not changed[~near].any()
    assert not changed[lab[0] > 0].any()  # existing lesion voxels never repainted
    assert changed[added].mean() > 0.5


@pytest.mark.parametrize(("spatial_dims", "spatial"), [(2, (48, 56)), (3, (36, 36, 36))])
def test_label_is_old_or_mask_and_nothing_else_changes(spatial_dims, spatial):
    img, lab = _image(spatial)
    t = RandLesionInpaint(_gen(spatial_dims), _source(spatial_dims), HU, prob=1.0,
                          placement=ANYWHERE).set_random_state(0)
    out, new = t(img, lab)
    assert out.shape == img.shape and out.dtype == img.dtype and new.dtype == lab.dtype
    _check_exact(img, out, lab, new, 2)
    assert out.min() >= -200 - 1e-3 and out.max() <= 300 + 1e-3  # within the mapping's range
    added = (new[0] > 0) & (lab[0] == 0)
    assert distance_transform_edt(lab[0] == 0)[added].min() > 2.0  # margin from the old lesion
    assert t.applied == 1 and not t.skipped


def test_2d_generator_into_one_slice_of_a_volume():
    img, lab = _image((40, 40, 8))
    out, new = RandLesionInpaint(_gen(), _source(), HU, prob=1.0, placement=ANYWHERE
                                 ).set_random_state(1)(img, lab)
    added = (new[0] > 0) & (lab[0] == 0)
    slices = np.flatnonzero(added.any((0, 1)))
    assert len(slices) == 1
    assert not np.delete(np.asarray(out != img)[0], slices[0], axis=-1).any()


def test_numpy_torch_and_metatensor_agree():
    img, lab = _image((48, 48))
    ref = RandLesionInpaint(_gen(), _source(), HU, prob=1.0, placement=ANYWHERE,
                            spacing_mm=(1.0, 1.0)).set_random_state(2)(img, lab)
    t = RandLesionInpaint(_gen(), _source(), HU, prob=1.0, placement=ANYWHERE,
                          spacing_mm=(1.0, 1.0)).set_random_state(2)
    out, new = t(torch.from_numpy(img), torch.from_numpy(lab))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(new.numpy(), ref[1])
    np.testing.assert_allclose(out.numpy(), ref[0], atol=1e-4)
    meta = MetaTensor(torch.from_numpy(img), affine=torch.diag(torch.tensor([1.0, 1, 1, 1])))
    d = RandLesionInpaintd(generator=_gen(), mask_source=_source(), intensity=HU, prob=1.0,
                           placement=ANYWHERE).set_random_state(2)
    res = d({"image": meta, "label": MetaTensor(torch.from_numpy(lab))})
    assert isinstance(res["image"], MetaTensor)
    np.testing.assert_array_equal(res["label"].numpy(), ref[1])


def test_dictionary_randomness_prob_and_keys():
    img, lab = _image((48, 48))
    data = {"image": img, "label": lab}

    def make(seed, prob=1.0):
        t = RandLesionInpaintd(generator=_gen(), mask_source=_source(), intensity=HU, prob=prob,
                               placement=ANYWHERE)
        assert t.set_random_state(seed) is t
        return t

    a, b, c = make(5)(data), make(5)(data), make(6)(data)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["label"], c["label"])
    half = make(0, prob=0.5)
    applied = [not np.array_equal(half(data)["label"], lab) for _ in range(30)]
    assert 5 < sum(applied) < 25
    out = make(0, prob=0.0)(data)
    assert out["image"] is img and out["label"] is lab
    with pytest.raises(KeyError, match="label"):
        make(0)({"image": img})
    with pytest.raises(ConfigError, match="region_key must name the region map"):
        RandLesionInpaintd(generator=_gen(), mask_source=_source(),
                           placement=PlacementSettings(region="key"))
    with pytest.raises(ConfigError, match=r"prob must be a number in \[0, 1\], not 2"):
        RandLesionInpaintd(generator=_gen(), mask_source=_source(), prob=2)


def test_bad_masks_and_images_are_skipped_with_a_counted_reason():
    img, lab = _image((48, 48))
    huge = RandLesionInpaint(_gen(), _source(diameters=(40.0,)), HU, prob=1.0,
                             placement=ANYWHERE).set_random_state(0)
    out, new = huge(img, lab)
    assert out is img and new is lab and huge.skipped == {"mask larger than patch": 1}
    small_img, small_lab = _image((24, 24))
    t = RandLesionInpaint(_gen(), _source(), HU, prob=1.0, placement=ANYWHERE).set_random_state(0)
    assert t(small_img, small_lab)[0] is small_img
    d = RandLesionInpaintd(generator=_gen(), mask_source=_source(), intensity=HU, prob=1.0,
                           placement=PlacementSettings(region="key"), region_key="organ"
                           ).set_random_state(0)
    organ = np.zeros_like(lab)
    res = d({"image": img, "label": lab, "organ": organ})  # outside any tissue: no region
    assert res["image"] is img
    organ[0, 30:33, 30:33] = 1  # a region too small for the lesion
    d({"image": img, "label": lab, "organ": organ})
    assert t.skipped == {"image smaller than patch": 1}
    assert d.skipped == {"empty region": 1, "no anchor fits": 1}
    with pytest.raises(DataError, match="image has 2 channel"):
        t(np.repeat(img, 2, 0), lab)
    with pytest.raises(ConfigError, match="mask_source makes 3D masks"):
        RandLesionInpaint(_gen(), _source(3))


class _EmptySource:
    spatial_dims = 2
    last_skip = None

    def __call__(self, rng):
        return np.zeros((4, 4), bool)


def test_an_empty_mask_is_skipped_and_counted():
    img, lab = _image((48, 48))
    t = RandLesionInpaint(_gen(), _EmptySource(), HU, prob=1.0, placement=ANYWHERE)
    out, new = t.set_random_state(0)(img, lab)
    assert out is img and new is lab and t.skipped == {"mask source gave no mask": 1}


def test_region_key_is_respected():
    img, lab = _image((48, 48))
    organ = np.zeros_like(lab)
    organ[0, 20:44, 24:46] = 1
    d = RandLesionInpaintd(generator=_gen(), mask_source=_source(), intensity=HU, prob=1.0,
                           placement=PlacementSettings(region="key"), region_key="organ")
    for seed in range(5):
        res = d.set_random_state(seed)({"image": img, "label": lab, "organ": organ})
        added = (res["label"][0] > 0) & (lab[0] == 0)
        assert added.any() and organ[0][added].all()


def _items(n: int):
    return [dict(zip(("image", "label"), _image((40, 40), seed=i), strict=True))
            for i in range(n)]


def test_same_items_at_any_batch_size_and_in_worker_processes():
    t = RandLesionInpaintd(generator=_gen(), mask_source=_source(), intensity=HU, prob=1.0,
                           placement=ANYWHERE)
    assert pickle.loads(pickle.dumps(t)).inpaint.generator.size == 32
    labels = {}
    for bs in (1, 3):
        ds = CacheDataset(_items(6), transform=t, cache_rate=0.0, progress=False)
        torch.manual_seed(0)  # MONAI's DataLoader seeds the transforms from torch's RNG
        batches = list(DataLoader(ds, batch_size=bs, num_workers=0))
        labels[bs] = torch.cat([b["label"] for b in batches])
    assert torch.equal(labels[1], labels[3])
    assert len({labels[1][i].numpy().tobytes() for i in range(6)}) == 6
    ds = CacheDataset(_items(4), transform=t, cache_rate=1.0, progress=False)
    seen = 0
    for batch in DataLoader(ds, batch_size=2, num_workers=2):
        assert batch["label"].shape == (2, 1, 40, 40)
        old = torch.zeros(40, 40, dtype=torch.bool)
        old[4:10, 4:10] = True
        for lab in batch["label"][:, 0] > 0:
            assert lab[old].all() and lab.sum() > old.sum()  # old lesion kept, one added
            seen += 1
    assert seen == 4


@pytest.mark.parametrize(("spatial_dims", "spatial", "image_mm", "window"),
                         [(2, (80, 80), (0.5, 0.5), 64), (3, (34, 34, 34), (2.0, 2.0, 2.0), 16)])
def test_another_spacing_keeps_the_lesion_size_in_mm(spatial_dims, spatial, image_mm, window):
    """With ``generator_spacing_mm`` (1 mm), an image at another spacing gets the lesion at its
    size in mm, the patch covers the generator's field of view, and the label is exact."""
    img, lab = _image(spatial, seed=1)
    kwargs = dict(prob=1.0, placement=ANYWHERE, spacing_mm=image_mm)
    scaled = RandLesionInpaint(_gen(spatial_dims), _source(spatial_dims), HU,
                               generator_spacing_mm=(1.0,) * spatial_dims, **kwargs)
    plain = RandLesionInpaint(_gen(spatial_dims), _source(spatial_dims), HU, **kwargs)
    assert scaled.scale_factors(img) == (1.0 / image_mm[0],) * spatial_dims
    out, new = scaled.set_random_state(0)(img, lab)
    plain.set_random_state(0)(img, lab)
    ins = scaled.last
    assert [s.stop - s.start for s in ins.window] == [window] * spatial_dims
    drawn = _source(spatial_dims)(np.random.default_rng(int(ins.seeds[0])))
    voxel = float(np.prod(image_mm))
    assert 0.75 <= ins.mask.sum() * voxel / drawn.sum() <= 1.25  # the same size in mm
    assert plain.last.mask.sum() == drawn.sum()  # native: the same size in voxels
    added = (new[0] > 0) & (lab[0] == 0)
    placed = np.zeros(spatial, bool)
    placed[tuple(slice(o, o + s) for o, s in zip(ins.offset, ins.mask.shape, strict=True))] = \
        ins.mask
    np.testing.assert_array_equal(added, placed)
    erased = np.zeros(spatial, bool)
    erased[ins.window] = ins.erase
    assert not (placed & ~erased).any() and not (erased & (lab[0] > 0)).any()
    np.testing.assert_array_equal(np.asarray(out)[0][~erased], img[0][~erased])


def test_the_generator_spacing_needs_a_value_per_axis():
    with pytest.raises(ConfigError, match="generator_spacing_mm needs 3 values"):
        RandLesionInpaint(_gen(3), _source(3), HU, generator_spacing_mm=(1.0, 1.0))
    t = RandLesionInpaint(_gen(2), _source(2), HU, spacing_mm=(1.005, 0.995),
                          generator_spacing_mm=(1.0, 1.0))
    assert t.scale_factors(np.zeros((1, 40, 40), np.float32)) is None  # within 1 %
