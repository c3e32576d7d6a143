"""Loading chain: readers, checks, RAS orientation, resampling, lesion masks, DICOM = NIfTI."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers_data import (
    DICOM_PATIENT,
    config_dict,
    phantom_arrays,
    spacing_affine,
    write_dicom_series,
    write_nifti,
)
from monai.data import MetaTensor

from medgan.config import config_from_dict
from medgan.data import LesionMask, LesionMaskd, build_case_transforms, load_case
from medgan.data.transforms import CheckCase, read_image
from medgan.errors import DataError

LPS = np.diag([-1.0, -1.0, 1.0, 1.0]) @ spacing_affine()
#: voxel axis 0 -> anterior, axis 1 -> right: a permuted, flipped acquisition
PERMUTED = np.array([[0, -1.0, 0, 20], [1.0, 0, 0, -10], [0, 0, 1.0, 5], [0, 0, 0, 1]])


def cfg(modality="ct", **data):
    return config_from_dict(config_dict(modality, **data))


def mask_centroid(mask) -> np.ndarray:
    return np.argwhere(np.asarray(mask)[0] > 0).mean(0)


def voxel_to_world(affine, index) -> np.ndarray:
    return (np.asarray(affine, dtype=float) @ [*index, 1.0])[:3]


# ---- readers ------------------------------------------------------------------------------

def test_read_image_is_channel_first_with_the_file_affine(make_phantom):
    phantom = make_phantom(spacing=(0.8, 0.9, 2.0))
    img = read_image(str(phantom.image))
    assert isinstance(img, MetaTensor)
    assert tuple(img.shape) == (1, 48, 48, 12)
    np.testing.assert_allclose(img.affine, phantom.affine, atol=1e-5)
    np.testing.assert_allclose(img[0].numpy(), phantom.image_array, atol=1e-4)


def test_read_image_takes_channels_from_a_4d_file(tmp_path):
    image, _, _ = phantom_arrays(modality="mr", channels=2)
    path = write_nifti(tmp_path / "two.nii.gz", np.moveaxis(image, 0, -1), spacing_affine())
    img = read_image(str(path))
    assert tuple(img.shape) == (2, 48, 48, 12)
    np.testing.assert_allclose(img.numpy(), image, atol=1e-4)


@pytest.mark.parametrize("affine", [spacing_affine((0.8, 0.9, 2.0)), LPS, PERMUTED],
                         ids=["ras", "lps", "permuted"])
def test_dicom_series_reads_like_the_nifti(make_phantom, tmp_path, affine):
    phantom = make_phantom(affine=affine, image_dtype=np.int16)
    volume = np.asanyarray(nib.load(phantom.image).dataobj)
    folder = write_dicom_series(tmp_path / "series", volume, affine)
    dicom, nifti = read_image(str(folder)), read_image(str(phantom.image))
    assert dicom.shape == nifti.shape
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
    np.testing.assert_array_equal(dicom.numpy(), nifti.numpy())


def test_multi_frame_dicom_is_refused(make_phantom, tmp_path):
    """MONAI's reader ignores per-frame geometry, so enhanced DICOM would load mis-oriented."""
    import pydicom

    phantom = make_phantom(shape=(16, 16, 2), image_dtype=np.int16)
    volume = np.asanyarray(nib.load(phantom.image).dataobj)
    folder = write_dicom_series(tmp_path / "series", volume, phantom.affine)
    ds = pydicom.dcmread(folder / "slice_000.dcm")
    ds.NumberOfFrames = 2
    ds.PixelData = (np.moveaxis(volume, -1, 0) + 1024).astype(np.uint16).tobytes()
    shutil.rmtree(folder)
    folder.mkdir()
    ds.save_as(folder / "multiframe.dcm")
    with pytest.raises(DataError, match="multi-frame .* DICOM is not supported; convert it to "
                                        "NIfTI"):
        read_image(str(folder))


@pytest.mark.parametrize("content", [b"", b"\x00" * 200], ids=["empty", "zeros"])
def test_unreadable_files_are_data_errors(tmp_path, content):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"scan.nii.gz: cannot be read as a NIfTI image or DICOM "
                                        r"series \((?!LoadImage)"):
        read_image(str(path))
    with pytest.raises(DataError, match=r"missing.nii.gz: file does not exist"):
        read_image(str(tmp_path / "missing.nii.gz"))


# ---- the load_case chain ------------------------------------------------------------------

@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["lps", "permuted"])
def test_load_case_reorients_to_ras(make_phantom, affine):
    phantom = make_phantom(affine=affine)
    out = load_case(phantom.case, cfg())
    assert nib.aff2axcodes(np.asarray(out["image"].affine)) == ("R", "A", "S")
    np.testing.assert_allclose(out["label"].affine, out["image"].affine)
    # nibabel's canonical (RAS) reorientation is the independent oracle
    canonical = nib.as_closest_canonical(nib.load(phantom.label))
    np.testing.assert_array_equal(out["label"][0].numpy(), np.asanyarray(canonical.dataobj))
    np.testing.assert_allclose(out["image"].affine, canonical.affine, atol=1e-5)
    # the lesion sits at the same place in the world
    centre = voxel_to_world(out["label"].affine, mask_centroid(out["label"]))
    written = voxel_to_world(phantom.affine, np.argwhere(phantom.label_array).mean(0))
    np.testing.assert_allclose(centre, written, atol=1e-3)


def test_lps_flip_moves_the_lesion_to_the_mirrored_index(make_phantom):
    phantom = make_phantom(affine=LPS, lesion_center=(30, 24, 6))
    out = load_case(phantom.case, cfg())
    np.testing.assert_allclose(mask_centroid(out["label"]), (47 - 30, 47 - 24, 6), atol=0.05)
    # image and mask stay aligned: lesion intensity under the mask
    image = out["image"][0].numpy()
    assert image[out["label"][0].numpy() == 1].mean() > image[image > -1].mean()


def test_spacing_resamples_image_and_keeps_the_mask_binary(make_phantom):
    phantom = make_phantom(spacing=(1.0, 1.0, 2.0))
    out = load_case(phantom.case, cfg(spacing_mm=(2.0, 2.0, 0.0)))
    assert tuple(out["image"].shape) == (1, 24, 24, 12)
    assert out["label"].shape[1:] == out["image"].shape[1:]
    np.testing.assert_allclose(out["image"].pixdim[:3], (2.0, 2.0, 2.0))
    assert out["label"].dtype == torch.uint8
    assert set(torch.unique(out["label"]).tolist()) == {0, 1}
    written_ml = phantom.label_array.sum() * 2.0
    assert out["label"].sum().item() * 8.0 == pytest.approx(written_ml, rel=0.25)
    centre = voxel_to_world(out["label"].affine, mask_centroid(out["label"]))
    expected = voxel_to_world(phantom.affine, np.argwhere(phantom.label_array).mean(0))
    np.testing.assert_allclose(centre, expected, atol=1.0)


def test_label_resampling_is_nearest_neighbour(make_phantom, tmp_path):
    """Labels 1 and 3 side by side: interpolation would invent a 2 at their border."""
    phantom = make_phantom()
    label = np.zeros_like(phantom.label_array)
    label[10:24, 8:40, 2:10] = 1
    label[24:38, 8:40, 2:10] = 3
    write_nifti(phantom.label, label, phantom.affine)
    out = load_case(phantom.case, cfg(spacing_mm=(0.7, 0.7, 0.0), lesion_labels=[2]))
    assert out["label"].sum().item() == 0
    out = load_case(phantom.case, cfg(spacing_mm=(0.7, 0.7, 0.0), lesion_labels=[3]))
    assert out["label"].sum().item() == pytest.approx((label == 3).sum() / 0.49, rel=0.1)


def test_lesion_labels_are_merged_and_others_become_background(make_phantom):
    phantom = make_phantom()
    label = np.zeros_like(phantom.label_array)
    label[10:14, 10:14, 2:6] = 1
    label[14:18, 10:14, 2:6] = 2
    label[10:14, 14:18, 2:6] = 3
    label[14:18, 14:18, 2:6] = 4
    label[30:36, 30:36, 2:6] = 5  # e.g. an organ label that is not lesion
    write_nifti(phantom.label, label, phantom.affine)
    out = load_case(phantom.case, cfg(lesion_labels=[4, 1, 2, 3]))
    mask = out["label"][0].numpy()
    np.testing.assert_array_equal(mask, np.isin(label, [1, 2, 3, 4]).astype(np.uint8))
    assert mask[30:36, 30:36, 2:6].sum() == 0


def test_load_case_output(make_phantom):
    phantom = make_phantom(modality="mr", channels=2)
    out = load_case(phantom.case, cfg("mr"))
    assert tuple(out["image"].shape) == (2, 48, 48, 12)
    assert out["image"].dtype == torch.float32
    assert out["image"].min() >= -1.0
    assert out["image"].max() <= 1.0
    assert out["case_id"] == "case_001"
    assert out["medgan_intensity"]["modality"] == "mr"
    assert len(out["medgan_intensity"]["low"]) == 2
    assert out["source_images"] == [str(p) for p in phantom.image]


@pytest.mark.parametrize("affine", [spacing_affine((0.8, 0.9, 2.0)), LPS], ids=["ras", "lps"])
def test_dicom_case_gives_the_same_arrays_as_nifti(make_phantom, tmp_path, affine):
    phantom = make_phantom(affine=affine, image_dtype=np.int16)
    volume = np.asanyarray(nib.load(phantom.image).dataobj)
    series = write_dicom_series(tmp_path / "pat" / "image", volume, affine)
    config = cfg(spacing_mm=(1.0, 1.0, 0.0))
    via_nifti = load_case(phantom.case, config)
    via_dicom = load_case({**phantom.case, "image": str(series)}, config)
    torch.testing.assert_close(via_dicom["image"].as_tensor(), via_nifti["image"].as_tensor())
    torch.testing.assert_close(via_dicom["label"].as_tensor(), via_nifti["label"].as_tensor())
    np.testing.assert_allclose(via_dicom["image"].affine, via_nifti["image"].affine, atol=1e-4)
    # no patient identifier travels with the loaded data
    text = repr(via_dicom["image"].meta) + repr(via_dicom)
    for value in DICOM_PATIENT.values():
        assert value not in text


def test_dicom_case_folder_holding_its_label_loads(make_phantom, tmp_path):
    """DICOM files directly in the case folder, next to label.nii.gz (the reader skips it)."""
    from medgan.data import load_datalist

    phantom = make_phantom(image_dtype=np.int16)
    volume = np.asanyarray(nib.load(phantom.image).dataobj)
    case_dir = write_dicom_series(tmp_path / "cases" / "pat_a", volume, phantom.affine)
    shutil.copy(phantom.label, case_dir / "label.nii.gz")
    [case] = load_datalist(tmp_path / "cases")
    out = load_case(case, cfg())
    assert tuple(out["image"].shape) == (1, 48, 48, 12)
    assert out["label"].sum().item() == phantom.label_array.sum()


def test_channels_with_different_geometry_are_refused(make_phantom, tmp_path):
    phantom = make_phantom(modality="mr", channels=2)
    image, _, _ = phantom_arrays((40, 48, 12), modality="mr")
    write_nifti(phantom.image[1], image, phantom.affine)
    with pytest.raises(DataError, match=r"case_001_0001.nii.gz: channel shape/geometry differs"):
        load_case(phantom.case, cfg("mr"))


def test_load_case_unwraps_monai_errors(make_phantom):
    phantom = make_phantom()
    image = phantom.image_array.copy()
    image[3, 3, 3] = np.nan
    write_nifti(phantom.image, image, phantom.affine)
    with pytest.raises(DataError, match=r"case_001.nii.gz: image contains 1 NaN/Inf voxel"):
        load_case(phantom.case, cfg())


def test_build_case_transforms_skips_spacing_when_unset():
    names = [type(t).__name__ for t in build_case_transforms(cfg()).transforms]
    assert "Spacingd" not in names
    names = [type(t).__name__ for t in build_case_transforms(cfg(spacing_mm=(1, 1, 0))).transforms]
    assert names.index("Orientationd") < names.index("Spacingd") < names.index("LesionMaskd")


# ---- CheckCase and LesionMask --------------------------------------------------------------

def meta(array, affine=None) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None],
                      affine=torch.as_tensor(spacing_affine() if affine is None else affine))


@pytest.fixture
def pair():
    image, label, _ = phantom_arrays((16, 16, 6), lesion_radius_mm=3)
    return image, label.astype(np.float32)


def test_check_case_accepts_a_good_pair(pair):
    CheckCase()(meta(pair[0]), meta(pair[1]), "img.nii.gz", "lab.nii.gz")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i, la: (i, la[:, :, :5]), "lab.nii.gz: label shape/geometry does not match"),
        (lambda i, la: (np.where(i > 0, np.nan, i), la), "img.nii.gz: image contains .* NaN/Inf"),
        (lambda i, la: (np.where(i > 0, np.inf, i), la), "img.nii.gz: image contains .* NaN/Inf"),
        (lambda i, la: (np.full_like(i, 7.0), la), r"img.nii.gz: image is constant \(7 everywh"),
        (lambda i, la: (i, la * 0.5), "lab.nii.gz: label contains non-integer values"),
        (lambda i, la: (i, np.where(la > 0, np.nan, la)), "lab.nii.gz: label contains non-int"),
        (lambda i, la: (i, -la), "lab.nii.gz: label contains negative values"),
    ],
    ids=["shape", "nan", "inf", "constant", "fractional-label", "nan-label", "negative-label"],
)
def test_check_case_refuses(pair, change, message):
    image, label = change(*pair)
    with pytest.raises(DataError, match=message):
        CheckCase()(meta(image), meta(label), "img.nii.gz", "lab.nii.gz")


def test_check_case_refuses_a_shifted_label(pair):
    shifted = spacing_affine()
    shifted[0, 3] += 1.0
    with pytest.raises(DataError, match="or the affines differ"):
        CheckCase()(meta(pair[0]), meta(pair[1], shifted), "img.nii.gz", "lab.nii.gz")


def test_lesion_mask_on_tensors_and_metatensors():
    label = torch.tensor([[[[0, 1, 2, 3, 4, 5]]]], dtype=torch.float32)
    out = LesionMask([1, 4])(label)
    assert out.dtype == torch.uint8
    assert out.ravel().tolist() == [0, 1, 0, 0, 1, 0]
    m = MetaTensor(label, affine=torch.eye(4) * 2)
    out = LesionMaskd("label", [2, 3])({"label": m, "image": m})
    assert isinstance(out["label"], MetaTensor)
    assert out["label"].ravel().tolist() == [0, 0, 1, 1, 0, 0]
    torch.testing.assert_close(out["label"].affine, m.affine)
    assert out["image"] is m
