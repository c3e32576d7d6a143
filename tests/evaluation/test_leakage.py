"""A generator that has seen a test patient (or, by default, patients outside the regime) is
refused by ``medgan evaluate segmentation``; a superset needs an explicit option and is flagged."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint

from medgan.cli import main
from medgan.data import load_datalist
from medgan.data.provenance import case_record
from medgan.evaluation.splits import make_split

SIZES = "2,all"


@pytest.fixture(scope="module")
def split(phantom_data):
    ids = [c["case_id"] for c in load_datalist(phantom_data)]
    return make_split(ids, [2, "all"], validation_fraction=0.2)


def checkpoint(tmp_path: Path, records: list[dict] | None) -> Path:
    return make_checkpoint(tmp_path / "gan", spatial_dims=2, patch_size=32,
                           spacing_mm=(1.0, 1.0, 1.0), training_cases=records)


def records(phantom_data: Path, ids) -> list[dict]:
    return [case_record(c) for c in load_datalist(phantom_data) if c["case_id"] in set(ids)]


def run(data: Path, ckpt: Path, out: Path, *extra: str):
    args = ["evaluate", "segmentation", "--data", data, "--checkpoint", ckpt, "--out", out,
            "--fast", "--seeds", "1", "--train-cases", SIZES, "--iterations", "2",
            "--ratio", "0.2", "--arms", "real+aug,real+aug+insert", "--device", "cpu",
            "--no-progress", *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_checkpoint_trained_on_a_test_patient_is_refused(phantom_data, split, tmp_path) -> None:
    leaked = split.test[0]
    ckpt = checkpoint(tmp_path, records(phantom_data, [*split.regimes["2"], leaked]))
    result = run(phantom_data, ckpt, tmp_path / "out", "--allow-generator-superset")
    assert result.exit_code == 2, result.output
    assert leaked in result.output and "test patient" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "runs").exists()


def test_renamed_copy_of_a_test_scan_is_caught_by_its_hash(phantom_data, split, tmp_path
                                                           ) -> None:
    leaked = split.test[1]
    renamed = {**records(phantom_data, [leaked])[0], "id": "someone_else"}
    ckpt = checkpoint(tmp_path, [*records(phantom_data, split.regimes["2"]), renamed])
    result = run(phantom_data, ckpt, tmp_path / "out", "--allow-generator-superset")
    assert result.exit_code == 2 and leaked in result.output


def test_superset_needs_the_option_and_is_flagged(phantom_data, split, tmp_path) -> None:
    ckpt = checkpoint(tmp_path, records(phantom_data, split.train_pool))  # every non-test one
    refused = run(phantom_data, ckpt, tmp_path / "refused")
    assert refused.exit_code == 2, refused.output
    assert "outside regime '2'" in refused.output
    assert split.train_pool[-1] in refused.output or "patient(s)" in refused.output
    allowed = run(phantom_data, ckpt, tmp_path / "allowed", "--allow-generator-superset")
    assert allowed.exit_code == 0, allowed.output
    head = (tmp_path / "allowed" / "report.md").read_text().splitlines()[:4]
    assert any("Warning" in line and "superset allowed" in line and "'2'" in line
               for line in head)


def test_checkpoint_without_recorded_cases_is_refused(phantom_data, tmp_path) -> None:
    result = run(phantom_data, checkpoint(tmp_path, None), tmp_path / "out")
    assert result.exit_code == 2
    assert "does not record" in result.output and "--train-generator" in result.output


def test_regime_patients_only_pass(phantom_data, split, tmp_path) -> None:
    from medgan.data.provenance import training_cases
    from medgan.evaluation.leakage import check_generator

    data = training_cases(load_datalist(phantom_data), label=False)
    meta = {"training_cases": records(phantom_data, split.regimes["2"])}
    assert check_generator(meta, data, split.test, "2", split.regimes["2"], "g") is None
    wide = {"training_cases": records(phantom_data, split.regimes["all"])}
    note = check_generator(wide, data, split.test, "2", split.regimes["2"], "g",
                           allow_superset=True)
    assert note and "superset allowed" in note


def test_identical_label_files_are_not_a_leak() -> None:
    from medgan.evaluation.leakage import check_generator

    benchmark = [{"id": "test1", "files": {"test1.nii.gz": "img-t"}},
                 {"id": "train1", "files": {"train1.nii.gz": "img-a"}}]
    # trained on train1, whose (empty) label file happens to equal test1's byte for byte
    meta = {"training_cases": [{"id": "train1", "files": {"imagesTr/train1.nii.gz": "img-a",
                                                          "labelsTr/train1.nii.gz": "empty"}}]}
    assert check_generator(meta, benchmark, ["test1"], "1", ["train1"], "g") is None
