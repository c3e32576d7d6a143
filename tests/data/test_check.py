"""check_dataset / format_report and the ``medgan check-data`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_data import config_dict, write_nifti

from medgan.cli import main
from medgan.config import config_from_dict
from medgan.data import check_dataset, format_report, load_datalist


def cfg(**data):
    return config_from_dict(config_dict(**data))


def check_data(*args: str):
    return CliRunner().invoke(main, ["check-data", *map(str, args), "--no-progress"])


@pytest.fixture
def dataset(make_dataset):
    return make_dataset(n=3, spacing=(0.8, 0.8, 2.5))


def test_good_dataset_report(dataset):
    report = check_dataset(load_datalist(dataset), cfg(), progress=False)
    assert report.ok
    assert report.n_bad == 0
    case = report.cases[0]
    assert case.case_id == "case_000"
    assert case.shape == [48, 48, 12]
    assert case.channels == 1
    assert case.spacing_mm == pytest.approx([0.8, 0.8, 2.5])
    assert case.label_values == [0, 1]
    assert case.lesion_components == 1
    assert case.intensity_range[0] == pytest.approx(-1000.0)
    assert case.lesion_volume_ml > 0
    assert not case.errors
    assert not case.warnings
    summary = report.summary()
    assert (summary["cases"], summary["usable"], summary["unusable"]) == (3, 3, 0)
    assert summary["shape_median"] == [48, 48, 12]
    assert summary["cases_without_lesion"] == 0


def test_report_counts_channels_and_warns_about_other_labels(make_phantom, tmp_path):
    phantom = make_phantom(modality="mr", channels=2, lesion_value=2)
    report = check_dataset([phantom.case], cfg(lesion_labels=[1]), progress=False)
    [case] = report.cases
    assert case.ok
    assert case.channels == 2
    assert case.lesion_components == 0
    assert any("label values [2] are not in data.lesion_labels [1]" in w for w in case.warnings)
    assert any("no lesion voxels" in w for w in case.warnings)


def test_lesion_components_are_counted(make_phantom):
    phantom = make_phantom()
    label = phantom.label_array.copy()
    label[2:5, 2:5, 2:5] = 1  # a second, separate lesion
    write_nifti(phantom.label, label, phantom.affine)
    [case] = check_dataset([phantom.case], cfg(), progress=False).cases
    assert case.lesion_components == 2


@pytest.mark.parametrize(
    ("shape", "patch", "outcome"),
    [((48, 48, 12), 32, "ok"), ((24, 24, 12), 32, "warn"), ((12, 12, 12), 32, "error")],
)
def test_scan_size_against_the_patch(make_phantom, shape, patch, outcome):
    centre = (shape[0] // 2, shape[1] // 2, 6)
    phantom = make_phantom(shape=shape, lesion_radius_mm=3, lesion_center=centre)
    [case] = check_dataset([phantom.case], cfg(patch_size=patch), progress=False).cases
    if outcome == "ok":
        assert not case.errors and not case.warnings
    elif outcome == "warn":
        assert case.ok
        assert "smaller than the 32-voxel patch; patches will be padded" in case.warnings[0]
    else:
        assert "smaller than half of data.patch_size=32" in case.errors[0]


def test_target_spacing_is_used_for_the_size_check(make_phantom):
    phantom = make_phantom(shape=(48, 48, 12))  # 48 mm at 1 mm
    [case] = check_dataset([phantom.case], cfg(spacing_mm=(4.0, 4.0, 0.0)), progress=False).cases
    assert "scan is 12 x 12 voxels at the target spacing" in case.errors[0]


def test_problems_become_bad_cases(dataset):
    report = check_dataset(load_datalist(dataset), cfg(), progress=False,
                           problems=["/data/imagesTr/extra.nii.gz: no matching label file"])
    assert not report.ok
    assert report.n_bad == 1
    assert report.cases[-1].case_id == "extra"
    assert report.cases[-1].errors == ["/data/imagesTr/extra.nii.gz: no matching label file"]


def test_format_report_is_a_table_with_problems(dataset):
    cases = load_datalist(dataset)
    with open(cases[1]["image"], "wb") as f:
        f.write(b"\x00" * 100)
    text = format_report(check_dataset(cases, cfg(), progress=False))
    lines = text.splitlines()
    assert lines[0].split() == ["case", "shape", "spacing", "mm", "ch", "lesions", "vol", "ml",
                                "status"]
    assert lines[2].split()[:3] == ["case_000", "48x48x12", "0.80x0.80x2.50"]
    assert lines[2].endswith("ok")
    assert lines[3].split()[1] == "-"
    assert lines[3].endswith("ERROR")
    assert "2 of 3 case(s) usable" in text
    assert f"error: {cases[1]['image']}: cannot be read" in text


# ---- the CLI -------------------------------------------------------------------------------

def test_cli_good_dataset_prints_a_table(dataset, make_config):
    result = check_data(dataset, "--config", make_config())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("case")
    assert "3 of 3 case(s) usable" in result.stdout
    assert result.stderr == ""


def test_cli_json_to_stdout_parses(dataset, make_config):
    result = check_data(dataset, "--config", make_config(), "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["summary"]["usable"] == 3
    assert [c["case_id"] for c in report["cases"]] == ["case_000", "case_001", "case_002"]


def test_cli_json_to_file_keeps_the_table(dataset, make_config, tmp_path):
    result = check_data(dataset, "--config", make_config(), "--json", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert "case(s) usable" in result.stdout
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["cases"] == 3


@pytest.mark.parametrize("json_out", [False, True])
def test_cli_bad_case_exits_1_naming_the_file(dataset, make_config, json_out):
    bad = dataset.parent / "labelsTr" / "case_002.nii.gz"
    label = np.zeros((48, 48, 11), np.uint8)
    write_nifti(bad, label, np.eye(4))
    result = check_data(dataset, "--config", make_config(), *(["--json", "-"] if json_out else []))
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1
    assert f"1 unusable case(s) in {dataset}" in errors[0]
    assert f"{bad}: label shape/geometry does not match" in errors[0]
    if json_out:
        report = json.loads(result.stdout)
        assert report["ok"] is False
        assert report["cases"][2]["errors"][0].startswith(str(bad))
    else:
        assert str(bad) in result.stdout
        assert "2 of 3 case(s) usable" in result.stdout


def test_cli_unpaired_folder_reports_the_files(make_phantom, make_config, tmp_path):
    folder = tmp_path / "task"
    for name in ("a", "b"):
        make_phantom(name, folder=folder)
    (folder / "labelsTr" / "b.nii.gz").unlink()
    result = check_data(folder, "--config", make_config())
    assert result.exit_code == 1
    assert f"{folder / 'imagesTr' / 'b.nii.gz'}: no matching label file" in result.stdout
    assert "1 of 2 case(s) usable" in result.stdout


def test_cli_warnings_keep_exit_0(make_dataset, make_config):
    dataset = make_dataset(n=1, lesion_value=5)
    result = check_data(dataset, "--config", make_config(lesion_labels=[1]))
    assert result.exit_code == 0
    assert "warning: " in result.stdout
    assert "no lesion voxels" in result.stdout
