"""Sarcoma DICOM + RTSTRUCT from ../shared/data: labels agree with the shipped NIfTI masks, a
DICOM SEG written by medgan gives them back, and training runs from DICOM alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from monai.transforms import Orientation

from medgan.cli import main
from medgan.data.transforms import RAS_LABELS, read_image, read_label
from medgan.sampling.dicom_writer import SyntheticSource, write_dicom_case

SARCOMA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sarcoma"
CASES = [(p, m) for p in ("STS_001", "STS_002", "STS_003") for m in ("CT", "MR_T1", "PET")]
MODALITY = {"CT": "ct", "MR_T1": "mr", "PET": "pet"}

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SARCOMA.is_dir(), reason=f"{SARCOMA} is absent"),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def ras(image):
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(image)


def rtstruct_label(patient: str, folder: str):
    dicom = SARCOMA / patient / folder / "dicom"
    image = read_image(str(dicom / "image"))
    label, report = read_label({"image": str(dicom / "image"),
                                "label": str(dicom / "mask" / "RS.dcm")}, image)
    return image, label, report


@pytest.mark.parametrize(("patient", "folder"), CASES, ids=[f"{p}-{m}" for p, m in CASES])
def test_rtstruct_agrees_with_the_nifti_mask_and_round_trips_through_seg(patient, folder,
                                                                         tmp_path):
    image, label, report = rtstruct_label(patient, folder)
    assert report.used == [f"'GTV_Mass_{folder}' (#1)"] and not report.skipped
    nifti = read_image(str(SARCOMA / patient / folder / "nifti" / "mask" / "mask.nii.gz"))
    assert np.allclose(np.asarray(nifti.affine), np.asarray(image.affine), atol=1e-2)
    ours, theirs = label.numpy()[0] > 0, nifti.numpy()[0] > 0
    assert ours.sum() > 0 and dice(ours, theirs) >= 0.95
    [series], seg = write_dicom_case(image.numpy(), label.numpy()[0], tmp_path, np.asarray(
        image.affine), MODALITY[folder], SyntheticSource("0" * 64, 0, 0))
    image2 = read_image(str(series))
    label2, _ = read_label({"image": str(series), "label": str(seg)}, image2, ["lesion"])
    assert dice(ras(label).numpy()[0] > 0, ras(label2).numpy()[0] > 0) == 1.0


def test_check_data_and_train_from_dicom_and_rtstruct_only(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for patient in ("STS_001", "STS_002", "STS_003"):  # <case>/image/ + <case>/mask/RS.dcm
        (cases / patient).symlink_to(SARCOMA / patient / "CT" / "dicom", target_is_directory=True)
    assert not [f for f in cases.rglob("*") if f.name.endswith((".nii", ".nii.gz"))]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "modality": "ct", "spatial_dims": 2,
        "data": {"spacing_mm": [2.0, 2.0, 0], "patch_size": 32, "patches_per_case": 4},
        "model": {"latent_dim": 8, "ngf": 8, "ndf": 8},
        "train": {"steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 2,
                  "checkpoint_every": 2, "ema_decay": None}}))
    runner = CliRunner()
    checked = runner.invoke(main, ["check-data", str(cases), "--config", str(config),
                                   "--no-progress"])
    assert checked.exit_code == 0, checked.output
    assert checked.output.count("RTSTRUCT ROIs found: 'GTV_Mass_CT' (#1); used:") == 3
    trained = runner.invoke(main, ["train", "--config", str(config), "--data", str(cases),
                                   "--out", str(tmp_path / "run"), "--device", "cpu",
                                   "--no-progress"])
    assert trained.exit_code == 0, trained.output
    assert "trained 2 steps" in trained.output


def test_dicom_series_with_rtstruct_as_hosts_of_full_size_cases(tmp_path):
    """The sarcoma CT series + RTSTRUCT as hosts of an inpainter trained on the bundled NIfTI
    sample: cases on the series' geometry, the tumour label kept, no patient identifier."""
    import gzip
    import json

    import nibabel as nib
    import pydicom
    from helpers_inpaint import inpaint_config

    from medgan.config import config_from_dict
    from medgan.sampling.cases import write_cases
    from medgan.training import train

    sample = Path(__file__).resolve().parents[2] / "medgan" / "sample_data" / "sarcoma" / "ct"
    config = inpaint_config(steps=2).to_dict()
    config["data"]["spacing_mm"] = [4.0, 4.0, 0.0]  # a 32-pixel patch holds a sarcoma
    run = tmp_path / "run"
    train(config_from_dict(config), data=sample / "dataset.json", out=run, seed=1,
          progress=False)
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"training": [
        {"image": str(SARCOMA / p / "CT" / "dicom" / "image"),
         "label": str(SARCOMA / p / "CT" / "dicom" / "mask" / "RS.dcm"), "case_id": p}
        for p in ("STS_001", "STS_002")]}))
    result = write_cases(run, hosts, 2, tmp_path / "cases", seed=0, lesions_per_case=2)
    assert result.n == 2
    data = json.loads((tmp_path / "cases" / "dataset.json").read_text())
    for entry in data["training"]:
        patient = entry["host_case_id"]
        image, label, _ = rtstruct_label(patient, "CT")
        out_image = nib.load(tmp_path / "cases" / entry["image"])
        out_label = np.asarray(nib.load(tmp_path / "cases" / entry["label"]).dataobj)
        np.testing.assert_allclose(out_image.affine, np.asarray(image.affine), atol=1e-4)
        tumour = np.asarray(label[0]) > 0
        assert (out_label[tumour] == 1).all()  # the real tumour is still labelled
        assert out_label.sum() > tumour.sum()  # and lesions were added
        ds = pydicom.dcmread(next((SARCOMA / patient / "CT" / "dicom" / "image").iterdir()),
                             stop_before_pixels=True)
        secrets = [str(v) for v in (ds.get("PatientName"), ds.get("PatientID")) if v]
        assert secrets
        for f in (tmp_path / "cases" / entry["image"], tmp_path / "cases" / entry["label"]):
            raw = gzip.decompress(f.read_bytes())
            assert not any(s.encode() in raw for s in secrets)
    # DICOM in, DICOM out: a new synthetic series + SEG per case, usable as training data
    out = tmp_path / "dicom_cases"
    write_cases(run, hosts, 2, out, seed=0, lesions_per_case=2, file_format="dicom")
    cfg = Path(__file__).resolve().parents[2] / "configs" / "quickstart_inpaint.yaml"
    res = CliRunner().invoke(main, ["check-data", str(out / "dataset.json"), "--config",
                                    str(cfg)])
    assert res.exit_code == 0 and "2 of 2 case(s) usable" in res.output, res.output
    for f in out.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert str(ds.PatientName) == "SYNTHETIC^MEDGAN"
        assert not any(s in str(ds) for s in secrets)
