"""Datalists: decathlon JSON, imagesTr/ + labelsTr/ folders and DICOM case folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_data import spacing_affine, write_datalist, write_dicom_series, write_nifti

from medgan.data import load_datalist
from medgan.data.datalist import image_files
from medgan.errors import DataError


def write_json(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


# ---- decathlon dataset.json ----------------------------------------------------------------

def test_relative_paths_resolve_against_the_json_folder(make_dataset, monkeypatch, tmp_path):
    path = make_dataset(n=2)
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    cases = load_datalist(path)
    root = path.parent.resolve()
    assert [c["case_id"] for c in cases] == ["case_000", "case_001"]
    for case, i in zip(cases, range(2), strict=True):
        assert case["image"] == str(root / "imagesTr" / f"case_{i:03d}.nii.gz")
        assert case["label"] == str(root / "labelsTr" / f"case_{i:03d}.nii.gz")


def test_a_folder_holding_dataset_json_is_a_datalist(make_dataset):
    path = make_dataset(n=2)
    assert load_datalist(path.parent) == load_datalist(path)


def test_absolute_paths_are_taken_as_written(make_phantom, tmp_path):
    phantom = make_phantom(folder=tmp_path / "elsewhere")
    path = write_json(tmp_path / "lists" / "dataset.json", {
        "training": [{"image": str(phantom.image), "label": str(phantom.label)}]})
    [case] = load_datalist(path)
    assert case["image"] == str(phantom.image)
    assert case["label"] == str(phantom.label)


@pytest.mark.parametrize("escape", ["../outside.nii.gz", "imagesTr/../../outside.nii.gz"])
def test_relative_paths_escaping_the_folder_are_refused(make_phantom, tmp_path, escape):
    make_phantom(folder=tmp_path / "ds")
    (tmp_path / "outside.nii.gz").write_bytes(b"")
    path = write_json(tmp_path / "ds" / "dataset.json", {
        "training": [{"image": escape, "label": "labelsTr/case_001.nii.gz"}]})
    with pytest.raises(DataError, match=r"dataset.json: training\[0\].image .* points outside "
                                        r"the dataset folder"):
        load_datalist(path)


def test_multi_channel_image_lists(make_phantom, tmp_path):
    phantom = make_phantom("brain_007", folder=tmp_path / "ds", modality="mr", channels=3)
    path = write_datalist(tmp_path / "ds" / "dataset.json", [phantom])
    [case] = load_datalist(path)
    assert case["image"] == [str(p.resolve()) for p in phantom.image]
    assert case["case_id"] == "brain_007"  # the _0000 channel suffix is not part of the id
    assert image_files(case) == case["image"]


def test_duplicate_stems_get_folder_based_case_ids(make_phantom, tmp_path):
    """BraTS-like layout: every case folder holds flair.nii.gz + label.nii.gz."""
    root = tmp_path / "brats"
    entries = []
    for name in ("pat0001", "pat0002"):
        p = make_phantom("x", folder=tmp_path / "tmp" / name)
        (root / name).mkdir(parents=True)
        shutil.move(p.image, root / name / "flair.nii.gz")
        shutil.move(p.label, root / name / "label.nii.gz")
        entries.append({"image": f"{name}/flair.nii.gz", "label": f"{name}/label.nii.gz"})
    cases = load_datalist(write_json(root / "dataset.json", {"training": entries}))
    assert [c["case_id"] for c in cases] == ["pat0001", "pat0002"]


def test_nested_repeated_names_use_the_folder_that_tells_cases_apart(make_phantom, tmp_path):
    """Sarcoma-like layout: <patient>/CT/nifti/image/image.nii.gz + .../mask/mask.nii.gz."""
    entries = []
    for name in ("STS_001", "STS_002"):
        p = make_phantom("x", folder=tmp_path / "tmp" / name)
        case = tmp_path / "sarcoma" / name / "CT" / "nifti"
        (case / "image").mkdir(parents=True)
        (case / "mask").mkdir()
        shutil.move(p.image, case / "image" / "image.nii.gz")
        shutil.move(p.label, case / "mask" / "mask.nii.gz")
        entries.append({"image": str(case / "image" / "image.nii.gz"),
                        "label": str(case / "mask" / "mask.nii.gz")})
    cases = load_datalist(write_json(tmp_path / "lists" / "sarcoma.json", {"training": entries}))
    assert [c["case_id"] for c in cases] == ["STS_001", "STS_002"]


def test_explicit_case_ids_are_kept(make_dataset):
    path = make_dataset(n=2)
    content = json.loads(path.read_text())
    content["training"][0]["case_id"] = "first"
    path.write_text(json.dumps(content))
    assert [c["case_id"] for c in load_datalist(path)] == ["first", "case_001"]


def test_repeated_case_id_is_an_error(make_dataset):
    path = make_dataset(n=2)
    content = json.loads(path.read_text())
    content["training"].append(dict(content["training"][0]))
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match="appears twice"):
        load_datalist(path)


def test_missing_file_raises_naming_it(make_dataset):
    path = make_dataset(n=2)
    (path.parent / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/case_001.nii.gz: file listed in .*dataset."
                                        r"json does not exist"):
        load_datalist(path)


def test_missing_file_is_listed_in_problems(make_dataset):
    path = make_dataset(n=2)
    (path.parent / "imagesTr" / "case_000.nii.gz").unlink()
    problems: list[str] = []
    cases = load_datalist(path, problems)
    assert [c["case_id"] for c in cases] == ["case_001"]
    assert len(problems) == 1
    assert "imagesTr/case_000.nii.gz: file listed in" in problems[0]


def test_no_case_left_names_the_first_problem(make_dataset):
    path = make_dataset(n=1)
    (path.parent / "imagesTr" / "case_000.nii.gz").unlink()
    with pytest.raises(DataError, match=r"no usable case left \(.*case_000.nii.gz: file listed"):
        load_datalist(path, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"validation": []}), "no 'training' list"),
        (json.dumps([1, 2]), "no 'training' list"),
        (json.dumps({"training": []}), "'training' must be a non-empty list"),
        (json.dumps({"training": {"image": "a"}}), "'training' must be a non-empty list"),
        (json.dumps({"training": [{"image": "a.nii.gz"}]}),
         r"training\[0\] must be an object with 'image' and 'label'"),
        (json.dumps({"training": [{"image": [], "label": "l.nii.gz"}]}),
         r"training\[0\].image is an empty list"),
        (json.dumps({"training": [{"image": 3, "label": "l.nii.gz"}]}),
         r"training\[0\].image must be a non-empty path string, not 3"),
    ],
    ids=["malformed", "no-training", "not-an-object", "empty", "not-a-list", "no-label",
         "empty-channels", "not-a-path"],
)
def test_bad_json_content(tmp_path, content, message):
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_datalist(path)


def test_missing_datalist_and_non_json_file(tmp_path):
    with pytest.raises(DataError, match="nope.json: datalist does not exist"):
        load_datalist(tmp_path / "nope.json")
    (tmp_path / "list.csv").write_text("image,label\n")
    with pytest.raises(DataError, match="must be a decathlon-style .json"):
        load_datalist(tmp_path / "list.csv")


# ---- imagesTr/ + labelsTr/ ---------------------------------------------------------------

def test_folder_pair_matches_by_name(make_phantom, tmp_path):
    folder = tmp_path / "task"
    for name in ("hip_002", "hip_001"):
        make_phantom(name, folder=folder)
    (folder / "imagesTr" / ".hidden.nii.gz").write_bytes(b"")
    (folder / "imagesTr" / "notes.txt").write_text("not an image")
    cases = load_datalist(folder)
    assert [c["case_id"] for c in cases] == ["hip_001", "hip_002"]
    assert cases[0]["image"] == str(folder / "imagesTr" / "hip_001.nii.gz")
    assert cases[0]["label"] == str(folder / "labelsTr" / "hip_001.nii.gz")


def test_folder_pair_groups_nnunet_channels(make_phantom, tmp_path):
    phantom = make_phantom("brain_1", folder=tmp_path / "task", modality="mr", channels=2)
    [case] = load_datalist(tmp_path / "task")
    assert case["image"] == [str(p) for p in phantom.image]
    assert case["case_id"] == "brain_1"


@pytest.fixture
def unpaired_folder(make_phantom, tmp_path):
    folder = tmp_path / "task"
    for name in ("a", "b", "c"):
        make_phantom(name, folder=folder)
    (folder / "labelsTr" / "b.nii.gz").unlink()  # image without label
    (folder / "imagesTr" / "c.nii.gz").unlink()  # label without image
    return folder


def test_unpaired_files_raise(unpaired_folder):
    with pytest.raises(DataError, match=r"task: 2 file\(s\) without a matching image/label"):
        load_datalist(unpaired_folder)


def test_unpaired_files_are_listed_in_problems(unpaired_folder):
    problems: list[str] = []
    cases = load_datalist(unpaired_folder, problems)
    assert [c["case_id"] for c in cases] == ["a"]
    assert sorted(problems) == sorted([
        f"{unpaired_folder / 'imagesTr' / 'b.nii.gz'}: no matching label file",
        f"{unpaired_folder / 'labelsTr' / 'c.nii.gz'}: no matching image file",
    ])


def test_folder_pair_without_images(tmp_path):
    (tmp_path / "task" / "imagesTr").mkdir(parents=True)
    (tmp_path / "task" / "labelsTr").mkdir()
    with pytest.raises(DataError, match="imagesTr: no NIfTI images found"):
        load_datalist(tmp_path / "task")


# ---- DICOM case folders --------------------------------------------------------------------

def test_dicom_case_folders(make_phantom, tmp_path):
    root = tmp_path / "dicom_cases"
    phantom = make_phantom()
    write_dicom_series(root / "pat_b" / "image", phantom.image_array, phantom.affine)
    shutil.copy(phantom.label, root / "pat_b" / "mask.nii.gz")
    write_dicom_series(root / "pat_a", phantom.image_array, phantom.affine)  # files directly
    shutil.copy(phantom.label, root / "pat_a" / "label.nii.gz")
    (root / "no_label").mkdir()  # ignored: not a case
    cases = load_datalist(root)
    assert cases == [
        {"image": str(root / "pat_a"), "label": str(root / "pat_a" / "label.nii.gz"),
         "case_id": "pat_a"},
        {"image": str(root / "pat_b" / "image"), "label": str(root / "pat_b" / "mask.nii.gz"),
         "case_id": "pat_b"},
    ]


def test_folder_without_cases(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no case folders with a DICOM series"):
        load_datalist(tmp_path / "empty")


def test_case_folder_with_only_nifti_asks_for_a_json(tmp_path):
    case = tmp_path / "root" / "pat"
    write_nifti(case / "label.nii.gz", np.zeros((4, 4, 4)), spacing_affine())
    write_nifti(case / "scan.nii.gz", np.zeros((4, 4, 4)), spacing_affine())
    with pytest.raises(DataError, match="holds NIfTI files but no DICOM series; write a dataset"):
        load_datalist(tmp_path / "root")


def test_empty_dicom_image_folder(make_phantom, tmp_path):
    case = tmp_path / "root" / "pat"
    (case / "image").mkdir(parents=True)
    shutil.copy(make_phantom().label, case / "label.nii.gz")
    with pytest.raises(DataError, match=r"pat/image: DICOM folder is empty"):
        load_datalist(tmp_path / "root")
