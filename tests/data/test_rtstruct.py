"""RTSTRUCT labels: rasterisation (holes, several contours), ROI choice, bad input, check-data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from helpers_data import config_dict, spacing_affine, write_dicom_series
from helpers_dicom import square, write_rtstruct

from medgan.cli import main
from medgan.config import config_from_dict
from medgan.data import check_dataset, load_case, load_datalist
from medgan.data.dicom_labels import series_info
from medgan.data.rtstruct import rasterise_rtstruct
from medgan.data.transforms import read_image
from medgan.errors import DataError

SHAPE = (32, 28, 6)
AFFINE = spacing_affine((0.8, 0.9, 2.5))
OUTER = square(5.5, 25.5, 5.5, 25.5, 3)  # voxels 6..25 x 6..25 on slice 3
INNER = square(10.5, 15.5, 10.5, 15.5, 3)  # voxels 11..15: a hole of 5 x 5


@pytest.fixture
def case_dir(tmp_path) -> Path:
    """``cases/pat_a/image/`` (a CT series, soft tissue with a bright square) + nothing else."""
    volume = np.full(SHAPE, 40.0, np.float32)
    volume[6:26, 6:26, 2:5] = 90.0
    write_dicom_series(tmp_path / "cases" / "pat_a" / "image", volume, AFFINE)
    return tmp_path / "cases" / "pat_a"


def rasterise(case_dir: Path, rs: Path, roi_names=("*GTV*",)):
    image = read_image(str(case_dir / "image"))
    return rasterise_rtstruct(rs, np.asarray(image.affine), image.shape[1:],
                              series_info(case_dir / "image"), roi_names)


def test_square_fills_the_voxel_centres_inside_on_its_slice(case_dir):
    rs = write_rtstruct(case_dir / "mask" / "RS.dcm", case_dir / "image", AFFINE,
                        {"GTV": [square(9.5, 20.5, 4.5, 15.5, 2)]})
    mask, report = rasterise(case_dir, rs)
    expected = np.zeros(SHAPE, np.uint8)
    expected[10:21, 5:16, 2] = 1
    np.testing.assert_array_equal(mask, expected)
    assert report.used == ["'GTV' (#1)"] and report.n_contours == 1 and not report.problems()


def test_inner_contour_cuts_a_hole_and_separate_contours_add_up(case_dir):
    far = square(26.5, 30.5, 1.5, 3.5, 3)  # a second island on the same slice: 4 x 2
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE,
                        {"GTV": [OUTER, INNER, far]})
    mask, _ = rasterise(case_dir, rs)
    assert mask[:, :, 3].sum() == 20 * 20 - 5 * 5 + 4 * 2
    assert mask[13, 13, 3] == 0 and mask[7, 7, 3] == 1 and mask[28, 2, 3] == 1
    assert mask[:, :, [0, 1, 2, 4, 5]].sum() == 0


def test_rois_are_chosen_by_pattern_or_number_and_combined(case_dir):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE,
                        {"GTV_primary": [square(1.5, 3.5, 1.5, 3.5, 1)], "Body": [OUTER],
                         "gtv_node": [square(1.5, 3.5, 1.5, 3.5, 4)]})
    mask, report = rasterise(case_dir, rs)  # default pattern, case-insensitive
    assert mask.sum() == 2 * 4 and report.used == ["'GTV_primary' (#1)", "'gtv_node' (#3)"]
    mask, report = rasterise(case_dir, rs, [2])
    assert mask.sum() == 400 and report.used == ["'Body' (#2)"]
    _, report = rasterise(case_dir, rs, ["Body", "PTV*"])
    assert report.unmatched == ["PTV*"] and "matching none: ['PTV*']" in report.notes()[0]


def test_roi_name_that_does_not_exist_is_a_clear_error(case_dir):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE, {"Body": [OUTER]})
    with pytest.raises(DataError, match=r"RS.dcm: no ROI matches data.roi_names \['Tumour'\]; "
                                        r"ROIs found: 'Body' \(#1\)"):
        rasterise(case_dir, rs, ["Tumour"])


def test_rtstruct_of_another_frame_of_reference_is_refused(case_dir):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE, {"GTV": [OUTER]},
                        frame_uid="1.2.3.4.5", series_uid="1.2.3.4.6")
    with pytest.raises(DataError, match=r"RS.dcm: Frame of Reference 1.2.3.4.5 differs from "
                                        r"the image series .*image"):
        rasterise(case_dir, rs)


def test_other_series_in_the_same_frame_is_placed_by_coordinates_with_a_warning(case_dir):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE, {"GTV": [OUTER]},
                        series_uid="1.2.3.4.6")
    mask, report = rasterise(case_dir, rs)
    assert mask.sum() == 400
    [warning] = report.problems()
    assert "references series 1.2.3.4.6, not the image series" in warning


def test_bad_contours_are_counted_and_skipped(case_dir):
    two_points = np.array([[3.0, 3.0, 2.0], [9.0, 9.0, 2.0]])
    outside = square(5.5, 9.5, 5.5, 9.5, 40)  # beyond the last slice
    tilted = np.array([[5.0, 5.0, 1.0], [15.0, 5.0, 1.0], [15.0, 15.0, 3.0]])
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE,
                        {"GTV": [OUTER, two_points, outside, tilted], "GTV_empty": []})
    mask, report = rasterise(case_dir, rs)
    assert mask.sum() == 400
    assert report.skipped == {"fewer than 3 points": 1, "outside the slices of the series": 1,
                              "not parallel to the slices of the series": 1}
    assert report.empty == ["ROI 'GTV_empty' (#2)"]
    assert "'GTV_empty' (#2) empty" in report.notes()[0]


def test_point_rois_are_not_regions(case_dir):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE,
                        {"GTV": [square(1.5, 3.5, 1.5, 3.5, 1)]}, geometric_type="POINT")
    mask, report = rasterise(case_dir, rs)
    assert mask.sum() == 0 and list(report.skipped.values()) == [1]
    assert "geometric type POINT" in next(iter(report.skipped))


def test_dicom_case_folder_with_rtstruct_trains_like_a_nifti_label(case_dir, tmp_path):
    write_rtstruct(case_dir / "mask" / "RS.dcm", case_dir / "image", AFFINE,
                   {"GTV": [square(5.5, 25.5, 5.5, 25.5, k) for k in (2, 3, 4)]})
    [case] = load_datalist(tmp_path / "cases")
    assert case["label"] == str(case_dir / "mask" / "RS.dcm") and case["case_id"] == "pat_a"
    out = load_case(case, config_from_dict(config_dict()))
    assert tuple(out["label"].shape) == (1, *SHAPE) and int(out["label"].sum()) == 3 * 400
    image = out["image"][0]
    assert float(image[out["label"][0] > 0].mean()) > float(image[out["label"][0] == 0].mean())


def test_roi_names_of_a_datalist_entry_replace_the_config(case_dir, tmp_path):
    write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE,
                   {"GTV": [OUTER], "Boost": [INNER]})
    entry = {"image": "cases/pat_a/image", "label": "cases/pat_a/RS.dcm", "roi_names": ["boost"]}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    [case] = load_datalist(tmp_path / "dataset.json")
    assert case["roi_names"] == ["boost"]
    assert int(load_case(case, config_from_dict(config_dict()))["label"].sum()) == 25
    entry["roi_names"] = "boost"
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DataError, match=r"training\[0\].roi_names must be a non-empty list"):
        load_datalist(tmp_path / "dataset.json")


def test_label_file_among_the_series_files_or_twice_is_refused(case_dir, tmp_path):
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE, {"GTV": [OUTER]})
    (case_dir / "mask").mkdir()
    shutil.copy(rs, case_dir / "mask" / "RS2.dcm")
    with pytest.raises(DataError, match=r"pat_a: 2 RTSTRUCT/SEG files"):
        load_datalist(tmp_path / "cases")
    flat = tmp_path / "flat" / "pat_b"
    shutil.copytree(case_dir / "image", flat)
    shutil.copy(rs, flat / "RS.dcm")
    with pytest.raises(DataError, match=r"RS.dcm: an RTSTRUCT file among the image series' "
                                        r"files; move it into a mask/ sub-folder"):
        load_datalist(tmp_path / "flat")


def test_rtstruct_on_a_nifti_image_is_refused(case_dir, tmp_path, make_phantom):
    phantom = make_phantom()
    rs = write_rtstruct(case_dir / "RS.dcm", case_dir / "image", AFFINE, {"GTV": [OUTER]})
    case = {"image": str(phantom.image), "label": str(rs), "case_id": "x"}
    with pytest.raises(DataError, match=r"RS.dcm: an RTSTRUCT label needs its image as a DICOM "
                                        r"series, not the NIfTI file"):
        load_case(case, config_from_dict(config_dict()))


def test_check_data_names_rois_used_skips_and_errors_without_traceback(case_dir, tmp_path):
    write_rtstruct(case_dir / "mask" / "RS.dcm", case_dir / "image", AFFINE,
                   {"GTV": [OUTER, np.array([[3.0, 3.0, 3.0], [5.0, 5.0, 3.0]])], "Body": []},
                   series_uid="1.2.3.4.6")
    other = tmp_path / "cases" / "pat_b"
    shutil.copytree(case_dir / "image", other / "image")
    write_rtstruct(other / "mask" / "RS.dcm", other / "image", AFFINE, {"GTV": [OUTER]},
                   frame_uid="1.2.3.4.5")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_dict()))
    result = CliRunner().invoke(main, ["check-data", str(tmp_path / "cases"), "--config",
                                       str(config), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    rs_a, rs_b = case_dir / "mask" / "RS.dcm", other / "mask" / "RS.dcm"
    assert f"info: {rs_a}: RTSTRUCT ROIs found: 'GTV' (#1), 'Body' (#2) empty; used: " \
           "'GTV' (#1)" in lines
    assert f"warning: {rs_a}: 1 contour(s) skipped: fewer than 3 points" in lines
    assert any(ln.startswith(f"warning: {rs_a}: references series 1.2.3.4.6") for ln in lines)
    assert any(ln.startswith(f"error: {rs_b}: Frame of Reference 1.2.3.4.5 differs")
               for ln in lines)
    report = check_dataset(load_datalist(tmp_path / "cases"), config_from_dict(config_dict()),
                           progress=False)
    assert [c.ok for c in report.cases] == [True, False]
    assert report.cases[0].lesion_volume_ml == pytest.approx(400 * 0.8 * 0.9 * 2.5 / 1000, 1e-3)
