"""RandSyntheticLesion(d): placement, blending, label, randomness, types, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_blob import blob_generator
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped
from scipy.ndimage import binary_dilation, distance_transform_edt

from medgan.augment import RandSyntheticLesion, RandSyntheticLesiond, body_region
from medgan.errors import ConfigError, DataError
from medgan.sampling import MaskPostprocess, load_generator


def _phantom(spatial: tuple[int, ...], channels: int = 1, seed: int = 0,
             body: float = 40.0, air: float = -1000.0, noise: float = 10.0):
    """Channel-first CT-like image: an ellipsoidal body in air; empty label; body mask."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in spatial], indexing="ij")
    inside = sum(g**2 for g in grid[:2]) <= 0.6**2  # a cylinder along the last axis in 3D
    image = np.where(inside, body, air) + rng.normal(0, noise, spatial) * inside
    image = np.repeat(image[None], channels, 0).astype(np.float32)
    return image, np.zeros((1, *spatial), np.float32), inside


@pytest.mark.parametrize(("spatial_dims", "spatial", "size"),
                         [(2, (64, 64), 16), (3, (40, 40, 24), 16)])
def test_lesion_inside_body_label_written_image_blended(spatial_dims, spatial, size):
    image, label, inside = _phantom(spatial)
    t = RandSyntheticLesion(blob_generator(spatial_dims, size), prob=1.0, lesion_value=2,
                            blend_sigma=1.0).set_random_state(0)
    out, lab = t(image, label)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == image.shape
    lesion = lab[0] == 2
    assert lesion.sum() > 10
    assert set(np.unique(lab)) == {0, 2}
    assert inside[lesion].all()  # the whole lesion lies in the body
    changed = np.abs(out - image)[0] > 1e-4
    assert changed[lesion].mean() > 0.9
    halo = binary_dilation(lesion, np.ones((3,) * spatial_dims, bool), iterations=5)
    assert not changed[~halo].any()  # nothing changes beyond the blur's reach (4 sigma)
    # intensity matched to the body (HU ~40), lesion brighter than its surroundings
    ring = binary_dilation(lesion, iterations=3) & ~lesion
    assert abs(out[0][ring].mean() - 40.0) < 15
    assert out[0][lesion].mean() > out[0][ring].mean()
    assert out[0][lesion].mean() < 400  # sane contrast in HU


def test_foreground_region_is_respected():
    image, label, _ = _phantom((64, 64))
    fg = np.zeros((1, 64, 64), np.float32)
    fg[0, 5:30, 30:60] = 1
    t = RandSyntheticLesiond(("image", "label"), generator=blob_generator(2, 16), prob=1.0,
                             foreground_key="fg", num_attempts=30).set_random_state(3)
    out = t({"image": image, "label": label, "fg": fg})
    lesion = out["label"][0] > 0
    assert lesion.any() and (fg[0][lesion] > 0).all()
    assert out["fg"] is fg


def test_no_room_leaves_data_unchanged():
    image, label, _ = _phantom((64, 64))
    fg = np.zeros((1, 64, 64), np.float32)
    fg[0, 30:33, 30:33] = 1  # far smaller than the lesion
    t = RandSyntheticLesiond(generator=blob_generator(2, 16), prob=1.0,
                             foreground_key="fg").set_random_state(0)
    out = t({"image": image, "label": label, "fg": fg})
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["label"], label)


def test_outside_body_allowed_on_request():
    image = np.full((1, 48, 48), -1000.0, np.float32)  # all air: no body at all
    label = np.zeros((1, 48, 48), np.float32)
    gen = blob_generator(2, 16)
    strict = RandSyntheticLesion(gen, prob=1.0).set_random_state(0)
    assert np.array_equal(strict(image, label)[1], label)
    loose = RandSyntheticLesion(gen, prob=1.0, allow_outside_body=True).set_random_state(0)
    assert loose(image, label)[1].sum() > 0


def test_prob_zero_unchanged_and_prob_checked():
    image, label, _ = _phantom((48, 48))
    t = RandSyntheticLesiond(generator=blob_generator(2, 16), prob=0.0)
    data = {"image": image, "label": label}
    out = t(data)
    assert out["image"] is image and out["label"] is label
    with pytest.raises(ConfigError, match=r"prob must be a number in \[0, 1\], not 1.5"):
        RandSyntheticLesiond(generator=blob_generator(2, 16), prob=1.5)


def test_set_random_state_determinism_and_variety():
    image, label, _ = _phantom((64, 64))
    gen = blob_generator(2, 16)

    def run(seed):
        t = RandSyntheticLesiond(generator=gen, prob=1.0)
        assert t.set_random_state(seed) is t
        return t({"image": image, "label": label})

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["label"], c["label"])
    t = RandSyntheticLesiond(generator=gen, prob=0.5).set_random_state(0)
    applied = [t({"image": image, "label": label})["label"].any() for _ in range(40)]
    assert 8 < sum(applied) < 32


def test_torch_numpy_and_metatensor_inputs_agree():
    image, label, _ = _phantom((64, 64))
    gen = blob_generator(2, 16)
    ref = RandSyntheticLesion(gen, prob=1.0).set_random_state(1)(image, label)
    out_t = RandSyntheticLesion(gen, prob=1.0).set_random_state(1)(
        torch.from_numpy(image), torch.from_numpy(label))
    assert isinstance(out_t[0], torch.Tensor) and out_t[0].dtype == torch.float32
    np.testing.assert_allclose(out_t[0].numpy(), ref[0], atol=1e-3)
    np.testing.assert_array_equal(out_t[1].numpy(), ref[1])
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))
    meta_img = MetaTensor(torch.from_numpy(image), affine=affine)
    meta_lab = MetaTensor(torch.from_numpy(label), affine=affine)
    t = RandSyntheticLesiond(generator=gen, prob=1.0)
    chain = Compose([EnsureTyped(keys=["image", "label"]), t])  # Compose reseeds its members
    t.set_random_state(1)
    out = chain({"image": meta_img, "label": meta_lab})
    assert isinstance(out["image"], MetaTensor) and isinstance(out["label"], MetaTensor)
    torch.testing.assert_close(out["image"].affine, affine.double())
    np.testing.assert_array_equal(out["label"].numpy(), ref[1])


def test_integer_image_keeps_dtype():
    image, label, _ = _phantom((64, 64))
    out, lab = RandSyntheticLesion(blob_generator(2, 16), prob=1.0).set_random_state(0)(
        image.astype(np.int16), label.astype(np.uint8))
    assert out.dtype == np.int16 and lab.dtype == np.uint8 and lab.max() == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_tensors_stay_on_gpu():
    image, label, _ = _phantom((64, 64))
    out, lab = RandSyntheticLesion(blob_generator(2, 16), prob=1.0).set_random_state(0)(
        torch.from_numpy(image).cuda(), torch.from_numpy(label).cuda())
    assert out.is_cuda and lab.is_cuda and lab.sum() > 0


def test_2d_generator_into_one_axial_slice_of_a_volume():
    image, label, inside = _phantom((48, 48, 10))
    out, lab = RandSyntheticLesion(blob_generator(2, 16), prob=1.0).set_random_state(2)(
        image, label)
    slices = np.flatnonzero(lab[0].reshape(-1, 10).any(0))
    assert len(slices) == 1
    z = slices[0]
    changed = np.abs(out - image)[0] > 1e-4
    assert not np.delete(changed, z, axis=-1).any()
    assert inside[lab[0] > 0].all()


def test_channels_rank_and_size_checks():
    image, label, _ = _phantom((48, 48), channels=2)
    with pytest.raises(DataError, match="image has 2 channel\\(s\\) but the generator works on 1"):
        RandSyntheticLesion(blob_generator(2, 16), prob=1.0)(image, label)
    two = RandSyntheticLesion(blob_generator(2, 16, image_channels=2), prob=1.0)
    out, lab = two.set_random_state(0)(image, label)
    assert out.shape == image.shape and lab.sum() > 0
    with pytest.raises(DataError, match="3 spatial dimensions"):
        RandSyntheticLesion(blob_generator(3, 16), prob=1.0)(image[:1], label)
    small, small_label, _ = _phantom((12, 12))
    out, lab = RandSyntheticLesion(blob_generator(2, 16), prob=1.0)(small, small_label)
    assert out is small and lab is small_label


def _contrast(out, lab):
    lesion = lab[0] > 0
    ring = binary_dilation(lesion, iterations=3) & ~lesion
    return out[0][lesion].mean() - out[0][ring].mean()


def test_contrast_is_the_generators_not_rescaled_by_the_surroundings():
    # BlobNet: lesion 0.6, background about -0.3 in model units = about +225 HU with the
    # -200..300 HU window; the old transform multiplied it by ring std ratios (noise-dependent).
    gen = blob_generator(2, 16)
    contrasts = []
    for noise in (2.0, 60.0):
        image, label, _ = _phantom((64, 64), noise=noise)
        out, lab = RandSyntheticLesion(gen, prob=1.0, blend_sigma=0.0).set_random_state(4)(
            image, label)
        contrasts.append(_contrast(out, lab))
    assert 150 < contrasts[0] < 300
    assert abs(contrasts[0] - contrasts[1]) < 0.15 * contrasts[0]


def test_values_are_clipped_to_the_valid_range():
    image, label, inside = _phantom((64, 64), body=280.0, noise=5.0)  # near the 300 HU top
    out, lab = RandSyntheticLesion(blob_generator(2, 16), prob=1.0).set_random_state(4)(
        image, label)
    lesion = lab[0] > 0
    assert lesion.any()
    assert out[0][lesion].max() <= 300.0 + 1e-3
    model = np.clip(image / 500.0, -1, 1)  # an image already in model space
    out_m, lab_m = RandSyntheticLesion(blob_generator(2, 16), prob=1.0, units="model"
                                       ).set_random_state(4)(model, label)
    assert lab_m.any() and out_m.min() >= -1.0 and out_m.max() <= 1.0
    with pytest.raises(ConfigError, match="units must be one of physical, model, not 'hu'"):
        RandSyntheticLesion(blob_generator(2, 16), units="hu")


def test_mask_touching_the_patch_border_is_rejected_and_counted():
    big = blob_generator(2, 16, radius=9.0)  # the ball always reaches the patch border
    image, label, _ = _phantom((64, 64))
    t = RandSyntheticLesiond(generator=big, prob=1.0, num_attempts=3).set_random_state(0)
    out = t({"image": image, "label": label})
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["label"], label)
    assert t.skipped == {"generated mask empty or touching the patch border": 1}


def test_existing_lesions_are_excluded_with_a_margin():
    image, label, inside = _phantom((64, 64))
    label[0, 26:38, 26:38] = 1  # an existing tumour in the middle of the body
    before = image.copy()
    for seed in range(8):
        t = RandSyntheticLesion(blob_generator(2, 16), prob=1.0, lesion_value=2,
                                margin_mm=3.0).set_random_state(seed)
        out, lab = t(image, label)
        new = lab[0] == 2
        assert new.any(), t.skipped
        assert (lab[0][label[0] == 1] == 1).all()  # old label kept
        dist = distance_transform_edt(label[0] == 0)  # spacing 1 mm in-plane
        assert dist[new].min() > 3.0
        np.testing.assert_array_equal(out[0][label[0] == 1], before[0][label[0] == 1])


def test_a_lesion_that_fits_anywhere_is_always_placed():
    image, label, _ = _phantom((64, 64))
    fg = np.zeros((1, 64, 64), np.float32)
    fg[0, 40:50, 10:20] = 1  # a 10 x 10 region: little room for a ~6-voxel lesion
    inserted = 0
    for seed in range(20):
        t = RandSyntheticLesiond(generator=blob_generator(2, 16), prob=1.0,
                                 foreground_key="fg").set_random_state(seed)
        lab = t({"image": image, "label": label, "fg": fg})["label"][0] > 0
        inserted += bool(lab.any())
        assert (fg[0][lab] > 0).all()
    assert inserted == 20


def test_dictionary_keys_and_missing_keys():
    gen = blob_generator(2, 16)
    image, label, _ = _phantom((48, 48))
    only_image = RandSyntheticLesiond(keys="image", generator=gen, prob=1.0).set_random_state(0)
    out = only_image({"image": image})
    assert set(out) == {"image"} and not np.array_equal(out["image"], image)
    with pytest.raises(KeyError, match="label"):
        RandSyntheticLesiond(generator=gen, prob=1.0)({"image": image})
    lax = RandSyntheticLesiond(generator=gen, prob=1.0, allow_missing_keys=True)
    assert lax({"image": image})["image"] is image
    with pytest.raises(ConfigError, match="keys must be"):
        RandSyntheticLesiond(keys=("a", "b", "c"), generator=gen)


def test_body_region_fills_enclosed_dark_structures():
    image, _, inside = _phantom((64, 64))
    image[0, 28:36, 28:36] = -1000.0  # "gas" inside the body
    body = body_region(image)
    assert body[inside].all() and not body[~inside].any()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_real_checkpoint_end_to_end(ckpt_2d, ckpt_3d, spatial_dims):
    ckpt = ckpt_2d if spatial_dims == 2 else ckpt_3d
    generator = load_generator(ckpt)
    spatial = (80, 80) if spatial_dims == 2 else (48, 48, 40)
    image, label, inside = _phantom(spatial)
    t = RandSyntheticLesiond(generator=generator, prob=1.0, num_attempts=5,
                             postprocess=MaskPostprocess(keep_largest=True),
                             allow_outside_body=True).set_random_state(0)
    out = t({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
    assert out["image"].shape == image.shape and out["label"].shape == label.shape
    assert torch.isfinite(out["image"]).all()
    # an untrained generator's masks are noise that reaches the patch border: all rejected
    assert out["label"].sum() == 0
    assert t.skipped == {"generated mask empty or touching the patch border": 1}
