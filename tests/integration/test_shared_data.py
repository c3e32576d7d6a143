"""The data layer on real scans from ../shared/data (skipped where that folder is absent).

BraTS (MR FLAIR, labels 1-4), soft-tissue sarcoma (CT/MR/PET NIfTI and CT DICOM), the
hippocampus decathlon task (with its unpaired files) and a set of DICOM encodings and vendors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from monai.transforms import Orientation

import medgan.data.patch_bank as patch_bank
from medgan.cli import main
from medgan.config import config_from_dict
from medgan.data import build_patch_bank, load_datalist
from medgan.data.transforms import read_image
from medgan.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SARCOMA_PATIENTS = ("STS_001", "STS_002", "STS_003")

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent"),
]


def needs(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def write_json(path: Path, entries: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"training": entries}), encoding="utf-8")
    return path


def write_config(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def check_data(datalist: Path, config: Path, *extra: str):
    return CliRunner().invoke(main, ["check-data", str(datalist), "--config", str(config),
                                     "--no-progress", *extra])


BRATS_CONFIG = {"modality": "mr", "spatial_dims": 2,
                "data": {"patch_size": 64, "lesion_labels": [1, 2, 3, 4],
                         "lesion_free_fraction": 0.1, "patches_per_case": 64}}


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    """dataset.json with absolute paths to every BraTS case's FLAIR and label."""
    root = needs("brats2015")
    entries = [{"image": str(case / "flair.nii.gz"), "label": str(case / "label.nii.gz")}
               for case in sorted(root.iterdir()) if (case / "flair.nii.gz").is_file()]
    return write_json(tmp_path_factory.mktemp("brats") / "dataset.json", entries)


# ---- BraTS ---------------------------------------------------------------------------------

def test_brats_check_data(brats, tmp_path):
    result = check_data(brats, write_config(tmp_path / "c.yaml", BRATS_CONFIG), "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["usable"] == report["summary"]["cases"] == 6
    for case in report["cases"]:
        assert case["case_id"].startswith("brats_2013_pat")  # folder names: stems repeat
        assert case["shape"] == [240, 240, 155]
        assert case["spacing_mm"] == [1.0, 1.0, 1.0]
        assert set(case["label_values"]) <= {0, 1, 2, 3, 4}
        assert case["lesion_components"] >= 1
        assert 10.0 < case["lesion_volume_ml"] < 400.0
        assert not case["warnings"]


def test_brats_patch_bank_2d(brats, tmp_path, monkeypatch):
    cases = load_datalist(brats)
    config = config_from_dict(BRATS_CONFIG)
    bank = build_patch_bank(cases, config, cache_dir=tmp_path / "cache", progress=False)
    assert 200 <= len(bank) <= 600
    assert tuple(bank.images.shape[1:]) == (1, 64, 64)
    assert bank.images.min() >= -1.0
    assert bank.images.max() <= 1.0
    assert all(m.any() for m in bank.masks[bank.has_lesion])
    assert not bank.masks[~bank.has_lesion].any()
    assert 0.05 < float((~bank.has_lesion).float().mean()) < 0.15
    assert len(bank.case_ids) == 6
    assert bank.spacing_mm == (1.0, 1.0, 1.0)
    # z-scored inside the brain: the fitted window spans a few standard deviations around 0
    assert -6.0 < bank.intensity.low[0] < 0.0 < bank.intensity.high[0] < 6.0

    def no_decoding(case, cfg):
        raise AssertionError("cache hit expected")

    monkeypatch.setattr(patch_bank, "load_case", no_decoding)
    again = build_patch_bank(cases, config, cache_dir=tmp_path / "cache", progress=False)
    assert again.fingerprint == bank.fingerprint
    assert len(again) == len(bank)


# ---- soft-tissue sarcoma -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("folder", "modality", "patch", "value_range"),
    [("CT", "ct", 64, (-1100.0, 4000.0)), ("MR_T1", "mr", 64, (0.0, np.inf)),
     ("PET", "pet", 32, (0.0, 100.0))],
)
def test_sarcoma_nifti_check_data(tmp_path, folder, modality, patch, value_range):
    root = needs("sarcoma")
    entries = [
        {"image": str(root / p / folder / "nifti" / "image" / "image.nii.gz"),
         "label": str(root / p / folder / "nifti" / "mask" / "mask.nii.gz")}
        for p in SARCOMA_PATIENTS
    ]
    datalist = write_json(tmp_path / "dataset.json", entries)
    config = write_config(tmp_path / "c.yaml", {"modality": modality,
                                                "data": {"patch_size": patch}})
    result = check_data(datalist, config, "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["case_id"] for c in report["cases"]] == list(SARCOMA_PATIENTS)
    for case in report["cases"]:
        assert case["label_values"] == [0, 1]
        assert case["lesion_components"] >= 1
        low, high = case["intensity_range"]
        assert value_range[0] <= low < high <= value_range[1]


def test_sarcoma_dicom_ct_case_folders(tmp_path):
    """The DICOM layout (case/image/ series + case/mask.nii.gz), linked to the real files."""
    root = needs("sarcoma")
    for p in SARCOMA_PATIENTS:
        (tmp_path / "cases" / p).mkdir(parents=True)
        (tmp_path / "cases" / p / "image").symlink_to(root / p / "CT" / "dicom" / "image")
        (tmp_path / "cases" / p / "mask.nii.gz").symlink_to(
            root / p / "CT" / "nifti" / "mask" / "mask.nii.gz")
    config = write_config(tmp_path / "c.yaml", {"modality": "ct", "data": {"patch_size": 64}})
    result = check_data(tmp_path / "cases", config, "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["case_id"] for c in report["cases"]] == list(SARCOMA_PATIENTS)
    assert report["cases"][0]["shape"] == [198, 202, 59]


def test_sarcoma_dicom_reads_like_its_nifti_conversion():
    case = needs("sarcoma", "STS_001", "CT")
    dicom = read_image(str(case / "dicom" / "image"))
    nifti = read_image(str(case / "nifti" / "image" / "image.nii.gz"))
    assert dicom.shape == nifti.shape
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-3)
    np.testing.assert_allclose(dicom.numpy(), nifti.numpy(), atol=1e-3)


# ---- hippocampus (decathlon imagesTr/labelsTr with unpaired files) --------------------------

def test_hippocampus_reports_the_unpaired_files(tmp_path):
    root = needs("hippocampus")
    config = write_config(tmp_path / "c.yaml", {"modality": "mr",
                                                "data": {"patch_size": 32,
                                                         "lesion_labels": [1, 2]}})
    result = check_data(root, config)
    assert result.exit_code == 1, result.output
    unpaired = [root / "imagesTr" / "hippocampus_118.nii.gz",
                root / "labelsTr" / "hippocampus_010.nii.gz",
                root / "labelsTr" / "hippocampus_281.nii.gz"]
    errors = [ln for ln in result.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == len(unpaired)
    for path in unpaired:
        assert any(str(path) in e for e in errors), path
    assert "260 of 263 case(s) usable" in result.stdout  # mixed uint8/float32 files all read
    assert result.stderr.startswith("Error: 3 unusable case(s)")


# ---- DICOM series without labels ------------------------------------------------------------

def test_monai_tiny_ct_series_and_mr_pair(tmp_path):
    tiny = needs("dicom", "monai_tiny")
    assert tuple(read_image(str(tiny / "CT_DICOM")).shape) == (1, 16, 16, 4)
    datalist = write_json(tmp_path / "dataset.json", [
        {"image": str(tiny / "anatomical.nii"), "label": str(tiny / "anatomical_label.nii.gz")}])
    config = write_config(tmp_path / "c.yaml", {"modality": "mr", "data": {"patch_size": 32}})
    result = check_data(datalist, config, "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cases"][0]["shape"] == [33, 41, 25]


def test_ct_jpeg2000_reads_or_names_the_decoder():
    series = needs("dicom", "ct_jpeg2000_20slices")
    try:
        image = read_image(str(series))
    except DataError as err:
        assert "pip install 'medgan[dicom]'" in str(err)
    else:
        assert tuple(image.shape) == (1, 512, 512, 20)
        assert -1100 <= float(image.min()) < float(image.max()) <= 4000  # Hounsfield units


def _vendor_series() -> list[Path]:
    root = SHARED / "dicom" / "vendors"
    if not root.is_dir():
        return []
    dicom_files = (f for f in root.rglob("*") if f.is_file() and f.parent != root
                   and not f.name.endswith((".nii.gz", ".nii")))
    return sorted({f.parent for f in dicom_files})


#: reasons a vendor series may be refused, each a clean DataError
REFUSALS = ("pip install 'medgan[dicom]'", "multi-frame (enhanced) DICOM is not supported",
            "expected a 3D volume")


@pytest.mark.parametrize("series", _vendor_series(),
                         ids=lambda p: str(p.relative_to(SHARED / "dicom" / "vendors")))
def test_vendor_series_match_dicom2nifti_or_are_refused_cleanly(series):
    try:
        image = read_image(str(series))
    except DataError as err:
        assert any(reason in str(err) for reason in REFUSALS), str(err)
        return
    truth = series.with_name(series.name + "_ground_truth.nii.gz")
    if truth.is_file():  # dicom2nifti's conversion, compared in RAS
        ours, theirs = Orientation("RAS")(image), Orientation("RAS")(read_image(str(truth)))
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-3)
