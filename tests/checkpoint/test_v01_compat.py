"""A checkpoint written by medgan 0.1 (format 1) still loads, describes itself and samples the
same pairs bit for bit.

``tests/data_files/checkpoint_v01/`` is a tiny 2D CT generator saved by medgan 0.1;
``expected_v01_samples.json`` holds the shape and SHA-256 (of the float32 bytes) of
``load_generator(path, device="cpu").generate(4, seed=0)`` as 0.1 computed it, and 0.1's
``checkpoint_sha256``. Tests work on a copy, and check that reading never writes into it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from medgan.checkpoint import checkpoint_sha256, read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.sampling.loader import load_generator

FIXTURE = Path(__file__).resolve().parents[1] / "data_files" / "checkpoint_v01"
EXPECTED = json.loads((FIXTURE / "expected_v01_samples.json").read_text(encoding="utf-8"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A copy of the 0.1 run folder (nothing may write into the committed one)."""
    return shutil.copytree(FIXTURE, tmp_path_factory.mktemp("v01") / "run")


@pytest.fixture(scope="module")
def loaded(run):
    return load_generator(run, device="cpu")


def test_the_fixture_is_a_format_1_checkpoint(run) -> None:
    meta = read_sidecar(resolve_checkpoint(run))  # verifies every file's SHA-256
    assert meta["format_version"] == 1 and meta["medgan_version"].startswith("0.1")
    assert "training_cases" not in meta and meta["modality"] == "ct"


def test_checkpoint_identity_is_unchanged(run, loaded) -> None:
    assert checkpoint_sha256(resolve_checkpoint(run)) == EXPECTED["checkpoint_sha256"]
    assert loaded.checkpoint_sha256 == EXPECTED["checkpoint_sha256"]


def test_loads_with_its_facts_and_unknown_training_cases(run, loaded) -> None:
    assert loaded.checkpoint_path == run / "checkpoints" / "step-00000000"
    assert loaded.use_ema
    assert (loaded.modality, loaded.spatial_dims, loaded.patch_size, loaded.latent_dim,
            loaded.image_channels) == ("ct", 2, 32, 8, 1)
    assert loaded.spacing_mm == (1.5, 1.5, 3.0) and loaded.lesion_labels == [1]
    assert loaded.intensity.units == "HU"
    assert loaded.spec.training_cases is None and loaded.spec.training_case_ids is None


def test_generate_reproduces_medgan_0_1_bit_for_bit(loaded) -> None:
    pairs = loaded.generate(4, seed=0)
    assert list(pairs.shape) == EXPECTED["shape"]
    digest = hashlib.sha256(pairs.contiguous().numpy().tobytes()).hexdigest()
    assert digest == EXPECTED["sha256"]


def test_raw_generator_weights_load_too(run) -> None:
    raw = load_generator(run, device="cpu", use_ema=False)
    assert not raw.use_ema and list(raw.generate(2, seed=1).shape) == [2, 2, 32, 32]


@pytest.mark.parametrize("as_json", [False, True])
def test_info_says_training_cases_are_not_recorded(run, as_json) -> None:
    args = ["info", str(run), *(["--json"] if as_json else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    if as_json:
        info = json.loads(result.output)
        assert info["training_cases"] == "not recorded (trained by medgan 0.1)"
        assert info["checkpoint_sha256"] == EXPECTED["checkpoint_sha256"]
        assert (info["modality"], info["spatial_dims"], info["patch_size"]) == ("ct", 2, 32)
    else:
        assert "training_cases: not recorded (trained by medgan 0.1)" in result.output
        assert result.output.splitlines()[0].endswith("medgan checkpoint (not a synthetic image)")


def test_reading_never_writes_into_the_checkpoint(tmp_path) -> None:
    run = shutil.copytree(FIXTURE, tmp_path / "run")
    load_generator(run, device="cpu").generate(1, seed=0)
    assert CliRunner().invoke(main, ["info", str(run)]).exit_code == 0
    assert files_of(run) == files_of(FIXTURE)
