"""DICOM SEG labels: binary and fractional, segment choice, another grid, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers_data import config_dict, spacing_affine, write_dicom_series
from helpers_dicom import write_seg

from medgan.config import config_from_dict
from medgan.data import load_case, load_datalist
from medgan.data.dicom_labels import series_info
from medgan.data.dicom_seg import resample_seg
from medgan.data.transforms import read_image
from medgan.errors import DataError

SHAPE = (24, 20, 5)
AFFINE = spacing_affine((0.7, 0.8, 2.0))


@pytest.fixture
def series(tmp_path) -> Path:
    volume = np.full(SHAPE, 40.0, np.float32)
    volume[4:12, 6:14, 1:4] = 90.0
    return write_dicom_series(tmp_path / "cases" / "pat_a" / "image", volume, AFFINE)


def blob(lo=(4, 6, 1), hi=(12, 14, 4)) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return mask


def read(series: Path, seg: Path, roi_names=("*",)):
    image = read_image(str(series))
    return resample_seg(seg, np.asarray(image.affine), image.shape[1:], series_info(series),
                        roi_names)


def test_binary_seg_comes_back_voxel_for_voxel(series, tmp_path):
    mask = blob()
    mask[0, 0, 0] = 1  # a corner voxel of the first slice
    seg = write_seg(tmp_path / "seg.dcm", series, mask)
    out, report = read(series, seg)
    np.testing.assert_array_equal(out, mask)
    assert report.kind == "SEG" and report.used == ["'tumour' (#1)"]


def test_segments_are_chosen_by_label_or_number(series, tmp_path):
    two = np.stack([blob(), blob((14, 2, 0), (18, 4, 2))])
    seg = write_seg(tmp_path / "seg.dcm", series, two, labels=("Tumour", "Node"))
    assert read(series, seg, ["tumour"])[0].sum() == two[0].sum()
    assert read(series, seg, [2])[0].sum() == two[1].sum()
    assert read(series, seg, ["*"])[0].sum() == two.sum()
    with pytest.raises(DataError, match=r"seg.dcm: no segment matches data.roi_names "
                                        r"\['liver'\]; segments found: 'Tumour' \(#1\), "
                                        r"'Node' \(#2\)"):
        read(series, seg, ["liver"])


def test_fractional_seg_is_lesion_from_one_half(series, tmp_path):
    fractions = blob().astype(np.float32) * 0.8
    fractions[4:12, 6:14, 3] = 0.3  # below one half: background
    seg = write_seg(tmp_path / "seg.dcm", series, fractions, fractional=True)
    out, _ = read(series, seg)
    assert out[:, :, 1:3].sum() == 2 * 64 and out[:, :, 3].sum() == 0


def test_seg_on_a_finer_grid_of_the_same_frame_is_resampled(series, tmp_path):
    fine_affine = spacing_affine((0.35, 0.4, 2.0))  # same origin, half the pixel size
    fine = write_dicom_series(tmp_path / "fine", np.zeros((48, 40, 5), np.float32), fine_affine)
    frame = pydicom.dcmread(next(series.iterdir())).FrameOfReferenceUID
    for f in fine.iterdir():  # the fine series shares the coarse one's Frame of Reference
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = frame
        ds.save_as(f)
    fine_mask = np.zeros((48, 40, 5), np.uint8)
    fine_mask[8:24, 12:28, 1:4] = 1  # the coarse blob's voxels 4..11 x 6..13
    seg = write_seg(tmp_path / "seg.dcm", fine, fine_mask)
    out, _ = read(series, seg)
    np.testing.assert_array_equal(out, blob())


def test_seg_without_segments_or_of_another_frame_is_refused(series, tmp_path):
    seg = write_seg(tmp_path / "seg.dcm", series, blob())
    ds = pydicom.dcmread(seg)
    ds.SegmentSequence = []
    ds.save_as(tmp_path / "empty.dcm")
    with pytest.raises(DataError, match=r"empty.dcm: DICOM SEG holds no segments"):
        read(series, tmp_path / "empty.dcm")
    ds = pydicom.dcmread(seg)
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    ds.save_as(tmp_path / "other.dcm")
    with pytest.raises(DataError, match=r"other.dcm: Frame of Reference 1.2.3.4.5 differs"):
        read(series, tmp_path / "other.dcm")


def test_dicom_case_folder_with_a_seg_loads(series, tmp_path):
    write_seg(series.parent / "seg" / "SEG.dcm", series, blob(), labels=("GTV",))
    [case] = load_datalist(tmp_path / "cases")
    assert case["label"].endswith("seg/SEG.dcm")
    out = load_case(case, config_from_dict(config_dict()))
    assert int(out["label"].sum()) == int(blob().sum())
