"""A trained checkpoint records the patients it saw (id + SHA-256 per file): in checkpoint.json,
in the model card and in ``medgan info``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.config import config_from_dict
from medgan.data import load_datalist
from medgan.data.provenance import file_sha256, recorded_ids
from medgan.info import describe
from medgan.training.trainer import train


def test_checkpoint_records_its_training_cases(tmp_path, make_dataset) -> None:
    data = make_dataset(n=2, shape=(40, 40, 12))
    config = config_from_dict({
        "modality": "ct", "spatial_dims": 2,
        "data": {"patch_size": 32, "patches_per_case": 4, "min_lesion_voxels": 5},
        "model": {"latent_dim": 8, "ngf": 4, "ndf": 4},
        "train": {"steps": 1, "batch_size": 2, "log_every": 1, "sample_every": 1,
                  "checkpoint_every": 1},
    })
    run = tmp_path / "run"
    train(config, data=data, out=run, progress=False)
    meta = read_sidecar(resolve_checkpoint(run))
    cases = load_datalist(data)
    assert recorded_ids(meta) == [c["case_id"] for c in cases]
    for record, case in zip(meta["training_cases"], cases, strict=True):
        hashes = set(record["files"].values())
        assert hashes == {file_sha256(case["image"]), file_sha256(case["label"])}
    card = (run / "MODEL_CARD.md").read_text()
    assert all(c["case_id"] in card for c in cases)
    assert describe(run)["training_cases"] == [c["case_id"] for c in cases]
    shown = CliRunner().invoke(main, ["info", str(run)])
    assert shown.exit_code == 0 and cases[0]["case_id"] in shown.output


def test_older_checkpoint_says_not_recorded(tmp_path) -> None:
    from helpers_checkpoint import make_checkpoint

    info = describe(make_checkpoint(tmp_path / "old"))
    assert "not recorded" in info["training_cases"]
    assert recorded_ids({}) is None


def test_file_sha256_of_a_folder_covers_its_files(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.dcm").write_bytes(b"1")
    before = file_sha256(tmp_path / "s")
    (tmp_path / "s" / "b.dcm").write_bytes(b"2")
    assert file_sha256(tmp_path / "s") != before
