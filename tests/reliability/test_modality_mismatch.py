"""Data of one modality read with a config or checkpoint of another.

Where it is caught: wherever scans are loaded with a config (``load_case``, which training,
``sample --real-data``, ``evaluate quality``/``privacy``/``segmentation`` all use, and
``check-data``), from what the data declare about themselves: the ``modality`` field of a
decathlon ``dataset.json`` or the Modality tag of a DICOM series. NIfTI files listed without a
declaration carry no modality, and medgan does not guess from intensities.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint
from helpers_data import write_dicom_series

from medgan.cli import main
from medgan.modalities import modality_of_name
from medgan.sampling import sample

MISMATCH = "the scan is MR (MRI in the 'modality' of"
CONFIG_SIDE = "but the config or checkpoint is for modality 'ct' (CT)"


def declare(datalist: Path, names: dict[str, str]) -> Path:
    content = json.loads(datalist.read_text())
    content["modality"] = names
    datalist.write_text(json.dumps(content))
    return datalist


@pytest.fixture
def mr_data(make_dataset, tmp_path) -> Path:
    return declare(make_dataset(n=2, folder=tmp_path / "mr", modality="mr"), {"0": "MRI"})


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ct-gan"), spacing_mm=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def ct_synthetic(ct_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct-synthetic") / "synthetic"
    sample(ct_run, 4, out, progress=False)
    return out


def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def the_error(result, code: int = 2) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def assert_names_both(line: str, datalist: Path) -> None:
    assert MISMATCH in line and str(datalist) in line and CONFIG_SIDE in line, line


def test_check_data_reports_every_case(mr_data, make_config):
    result = invoke("check-data", mr_data, "--config", make_config("ct"), "--no-progress")
    assert_names_both(the_error(result, code=1), mr_data)
    assert result.stdout.count(MISMATCH) == 2  # one error line per case in the report


def test_check_data_accepts_the_matching_config(mr_data, make_config):
    result = invoke("check-data", mr_data, "--config", make_config("mr"), "--no-progress")
    assert result.exit_code == 0, result.output


def test_train(mr_data, make_config, tmp_path):
    result = invoke("train", "--config", make_config("ct"), "--data", mr_data, "--out",
                    tmp_path / "run", "--device", "cpu", "--no-progress")
    assert_names_both(the_error(result), mr_data)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_sample_with_real_data_of_another_modality(mr_data, ct_run, tmp_path):
    out = tmp_path / "synthetic"
    result = invoke("sample", "--checkpoint", ct_run, "-n", "2", "--out", out,
                    "--max-similarity", "0.9", "--real-data", mr_data, "--no-progress")
    assert_names_both(the_error(result), mr_data)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["quality", "privacy"])
def test_evaluate_with_real_data_of_another_modality(mr_data, ct_synthetic, tmp_path, command):
    out = tmp_path / ("q/report.json" if command == "quality" else "privacy")
    extra = ["--no-frd"] if command == "quality" else []
    result = invoke("evaluate", command, "--real", mr_data, "--synthetic", ct_synthetic,
                    "--out", out, "--no-progress", *extra)
    assert_names_both(the_error(result), mr_data)
    assert not out.exists()


def test_evaluate_segmentation_with_data_of_another_modality(make_dataset, ct_run, tmp_path):
    data = declare(make_dataset(n=6, folder=tmp_path / "mr6", modality="mr", shape=(40, 40, 8)),
                   {"0": "MRI"})
    result = invoke("evaluate", "segmentation", "--data", data, "--checkpoint", ct_run, "--out",
                    tmp_path / "bench", "--fast", "--device", "cpu", "--no-progress")
    assert_names_both(the_error(result), data)


def test_dicom_modality_tag(make_phantom, make_config, tmp_path):
    """A CT series (Modality CT) read with an MR config."""
    phantom = make_phantom(image_dtype=np.int16)
    root = tmp_path / "cases"
    series = write_dicom_series(root / "case_a" / "image",
                                np.asanyarray(nib.load(phantom.image).dataobj), phantom.affine)
    (root / "case_a" / "label.nii.gz").write_bytes(Path(phantom.label).read_bytes())
    result = invoke("check-data", root, "--config", make_config("mr"), "--no-progress")
    line = the_error(result, code=1)
    assert f"the scan is CT (CT in the DICOM Modality tag of {series})" in line
    assert "but the config or checkpoint is for modality 'mr' (MR)" in line
    assert invoke("check-data", root, "--config", make_config("ct"),
                  "--no-progress").exit_code == 0


def test_multichannel_declaration(make_dataset, make_config, tmp_path):
    data = declare(make_dataset(n=1, folder=tmp_path / "brain", modality="mr", channels=2),
                   {"0": "FLAIR", "1": "T1w"})
    line = the_error(invoke("check-data", data, "--config", make_config("pet"),
                            "--no-progress"), code=1)
    assert "the scan is MR (FLAIR/T1w in the 'modality' of" in line and "'pet'" in line
    assert invoke("check-data", data, "--config", make_config("mr"),
                  "--no-progress").exit_code == 0


def test_undeclared_nifti_is_not_guessed(make_dataset, make_config, tmp_path):
    """Documented limit: plain NIfTI says nothing about its modality, so nothing is refused."""
    data = make_dataset(n=1, folder=tmp_path / "plain", modality="mr")
    assert invoke("check-data", data, "--config", make_config("ct"),
                  "--no-progress").exit_code == 0


@pytest.mark.parametrize(("name", "modality"), [
    ("CT", "ct"), ("ct", "ct"), ("MR", "mr"), ("MRI", "mr"), ("T1w", "mr"), ("t1gd", "mr"),
    ("T2", "mr"), ("T2w", "mr"), ("FLAIR", "mr"), ("ADC", "mr"), ("DWI", "mr"), ("PT", "pet"),
    ("PET", "pet"), ("FDG-PET", "pet"), ("image", "none"), ("X-ray", None), ("US", None),
])
def test_declared_names(name, modality):
    """Decathlon ``modality`` names and DICOM Modality codes medgan recognises."""
    assert modality_of_name(name) == modality
