"""DICOM output: series + SEG per synthetic case, read back by medgan, pydicom and MONAI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from helpers_data import DICOM_PATIENT, config_dict, phantom_arrays, spacing_affine

from medgan.cli import main
from medgan.config import config_from_dict
from medgan.data import load_case, load_datalist
from medgan.data.transforms import read_image, read_label
from medgan.errors import ConfigError
from medgan.sampling import sample
from medgan.sampling.dicom_writer import SyntheticSource, write_dicom_case

SOURCE = SyntheticSource("0123456789abcdef" * 4, seed=7, index=3)


@pytest.mark.parametrize("modality", ["ct", "mr", "pet"])
def test_case_reads_back_in_physical_units_with_its_mask(tmp_path, modality):
    image, label, _ = phantom_arrays((20, 18, 4), modality, spacing=(1.2, 1.1, 3.0))
    affine = spacing_affine((1.2, 1.1, 3.0))
    [series], seg = write_dicom_case(image[None], label, tmp_path / "case", affine, modality,
                                     SOURCE)
    back = read_image(str(series))
    lab, report = read_label({"image": str(series), "label": str(seg)}, back, ["lesion"])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # written with +x / +y in-plane axes
    assert np.allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(back.affine)[:, 3],
                       lps @ [19, 17, 0, 1])
    flipped = image[::-1, ::-1]  # what the +x / +y orientation does to the voxel order
    tolerance = 0.5 if modality == "ct" else float(np.ptp(image)) / 65535
    np.testing.assert_allclose(back.numpy()[0], flipped, atol=tolerance + 1e-4)
    np.testing.assert_array_equal(lab.numpy()[0], label[::-1, ::-1])
    assert report.used == ["'lesion' (#1)"]


def test_headers_are_new_synthetic_and_free_of_identifiers(tmp_path):
    image, label, _ = phantom_arrays((16, 16, 3), "pet")
    [series], seg = write_dicom_case(image[None], label, tmp_path / "a", np.eye(4), "pet", SOURCE)
    [again], _ = write_dicom_case(image[None], label, tmp_path / "b", np.eye(4), "pet", SOURCE)
    first = pydicom.dcmread(sorted(series.iterdir())[0])
    other = pydicom.dcmread(sorted(again.iterdir())[0])
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert first[uid].value != other[uid].value
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.SeriesDescription.startswith("SYNTHETIC medgan ckpt=0123456789ab seed=7 idx=3")
    assert SOURCE.checkpoint_sha256 in first.ImageComments and first.Modality == "PT"
    assert first.Units == "GML" and float(first.RescaleSlope) > 0
    segds = pydicom.dcmread(seg)
    assert segds.Modality == "SEG" and segds.SeriesDescription.startswith("SYNTHETIC")
    algorithm = segds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medgan synthetic lesion generator"
    assert SOURCE.checkpoint_sha256 in algorithm.AlgorithmParameters
    assert segds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    text = b"".join(f.read_bytes() for f in [*series.iterdir(), seg])
    for value in DICOM_PATIENT.values():
        assert value.encode() not in text
    ct = pydicom.dcmread(sorted(write_dicom_case(image[None], label, tmp_path / "c", np.eye(4),
                                                 "ct", SOURCE)[0][0].iterdir())[0])
    assert (ct.RescaleType, float(ct.RescaleSlope), float(ct.RescaleIntercept)) == ("HU", 1, 0)


def test_monai_loadimage_reads_the_series(tmp_path):
    from monai.transforms import LoadImage

    image, label, _ = phantom_arrays((16, 14, 3), "ct")
    [series], _ = write_dicom_case(image[None], label, tmp_path / "a", np.eye(4), "ct", SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = LoadImage(image_only=True)(str(series))
    np.testing.assert_allclose(np.asarray(loaded), np.round(image[::-1, ::-1]))


def test_sample_format_dicom_is_a_dataset_medgan_reads(tmp_path, ckpt_2d):
    out = tmp_path / "synth"
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "-n", "3",
                                       "--out", str(out), "--format", "dicom", "--device", "cpu",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["medgan"]["format"] == "dicom" and len(meta["training"]) == 3
    assert sorted(p.name for p in (out / "dicomTr").iterdir()) == \
        ["synth_00000", "synth_00001", "synth_00002"]
    cases = load_datalist(out)
    config = config_from_dict({**config_dict(), "data": {"patch_size": 32}})
    loaded = load_case(cases[0], config)
    assert tuple(loaded["image"].shape) == (1, 32, 32, 1) and loaded["label"].sum() > 0
    again = sample(ckpt_2d, 2, out, seed=0, overwrite=True, progress=False, file_format="dicom")
    assert again.n == 2 and not (out / "dicomTr" / "synth_00002").exists()
    assert not any(p.name.startswith(".partial") for p in out.iterdir())


def test_sample_format_must_be_known(tmp_path, ckpt_2d):
    with pytest.raises(ConfigError, match=r"file_format: must be one of nifti, dicom, not 'png'"):
        sample(ckpt_2d, 1, tmp_path / "x", progress=False, file_format="png")
