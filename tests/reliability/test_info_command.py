"""``medgan info PATH [--json]``: is this medgan synthetic output, and from which checkpoint?

Synthetic NIfTI images and masks carry a header marker, a synthetic datalist says so per case,
a real scan has no marker, a checkpoint or run folder is summarised from its verified sidecar;
a missing or unreadable path is one ``Error:`` line and exit code 2.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint

from medgan.cli import main
from medgan.sampling import sample


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, synthetic dataset folder with 3 pairs)."""
    run = make_checkpoint(tmp_path_factory.mktemp("run"))
    out = tmp_path_factory.mktemp("synthetic") / "out"
    sample(run, 3, out, seed=4, progress=False)
    return run, out


def info(path: Path, as_json: bool = True):
    result = CliRunner().invoke(main, ["info", str(path), *(["--json"] if as_json else [])])
    return result, (json.loads(result.stdout) if as_json and result.exit_code == 0 else None)


@pytest.mark.parametrize("kind", ["imagesTr", "labelsTr"])
def test_synthetic_nifti(generated, kind):
    run, out = generated
    case = json.loads((out / "dataset.json").read_text())["training"][2]
    result, data = info(out / kind / "synth_00002.nii.gz")
    assert result.exit_code == 0, result.output
    assert data["synthetic"] is True and data["kind"] == "nifti"
    assert data["seed"] == case["seed"] and data["index"] == 2
    assert case["checkpoint_sha256"].startswith(data["checkpoint_sha256_prefix"])
    text, _ = info(out / kind / "synth_00002.nii.gz", as_json=False)
    assert text.stdout.splitlines()[0].endswith("medgan SYNTHETIC nifti")


def test_synthetic_datalist(generated):
    _, out = generated
    result, data = info(out / "dataset.json")
    assert result.exit_code == 0, result.output
    assert data["synthetic"] is True and data["cases"] == data["synthetic_cases"] == 3
    assert data["medgan"]["seed"] == 4 and data["medgan"]["n"] == 3


def test_real_nifti_and_real_datalist_have_no_marker(make_dataset):
    datalist = make_dataset(n=1)
    result, data = info(datalist.parent / "imagesTr" / "case_000.nii.gz")
    assert result.exit_code == 0, result.output
    assert data["synthetic"] is False and "seed" not in data
    result, data = info(datalist)
    assert data["synthetic"] is False and data["synthetic_cases"] == 0
    text, _ = info(datalist.parent / "imagesTr" / "case_000.nii.gz", as_json=False)
    assert text.stdout.splitlines()[0].endswith("no medgan synthetic marker")


def test_a_copy_without_the_marker_is_not_synthetic(generated, tmp_path):
    """The marker lives in the header: rewriting the file drops it (documented limit)."""
    import nibabel as nib

    _, out = generated
    img = nib.load(out / "imagesTr" / "synth_00000.nii.gz")
    img.header["descrip"] = b""
    nib.save(img, str(tmp_path / "laundered.nii.gz"))
    _, data = info(tmp_path / "laundered.nii.gz")
    assert data["synthetic"] is False


@pytest.mark.parametrize("where", ["run", "checkpoints", "step", "checkpoint.json"])
def test_checkpoint_and_run_folders(generated, where):
    run, _ = generated
    step = next((run / "checkpoints").glob("step-*"))
    path = {"run": run, "checkpoints": run / "checkpoints", "step": step,
            "checkpoint.json": step / "checkpoint.json"}[where]
    result, data = info(path)
    assert result.exit_code == 0, result.output
    assert data["kind"] == "checkpoint" and data["synthetic"] is False
    assert data["file"] == str(step) and data["modality"] == "ct" and data["step"] == 0
    assert len(data["checkpoint_sha256"]) == 64


def bad_path(tmp_path: Path, what: str) -> tuple[Path, str]:
    path = tmp_path / "scan.nii.gz"
    if what == "missing":
        return tmp_path / "nope.nii.gz", "does not exist"
    if what == "random-bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "gzip-of-text":
        path.write_bytes(gzip.compress(b"not a nifti header" * 30))
    elif what == "uncompressed-garbage":
        path = tmp_path / "scan.nii"
        path.write_text("hello")
    elif what == "malformed-json":
        path = tmp_path / "dataset.json"
        path.write_text('{"training": [')
        return path, "malformed JSON"
    elif what == "unknown-type":
        path = tmp_path / "notes.txt"
        path.write_text("x")
        return path, "not a NIfTI file, datalist JSON or checkpoint folder"
    elif what == "folder-without-checkpoint":
        path = tmp_path / "folder"
        path.mkdir()
        return path, "no medgan checkpoint here"
    return path, "cannot be read as NIfTI"


@pytest.mark.parametrize("what", ["missing", "random-bytes", "empty", "gzip-of-text",
                                  "uncompressed-garbage", "malformed-json", "unknown-type",
                                  "folder-without-checkpoint"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_bad_paths_are_one_line_and_exit_2(tmp_path, what, as_json):
    path, problem = bad_path(tmp_path, what)
    result, _ = info(path, as_json=as_json)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: ") and problem in lines[0]


def test_info_never_changes_what_it_reads(generated, tmp_path):
    run, out = generated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy / "synthetic")
    shutil.copytree(run, copy / "run")
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    for path in [copy / "run", copy / "synthetic" / "dataset.json",
                 copy / "synthetic" / "imagesTr" / "synth_00000.nii.gz"]:
        assert info(path)[0].exit_code == 0
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
