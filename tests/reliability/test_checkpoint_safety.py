"""Checkpoints that must be refused, through every command that reads one.

Weights are read only from safetensors, after every file's SHA-256 was checked against
``checkpoint.json``: a folder holding a pickle, a weight file changed by one byte, a sidecar that
lists a missing file, a checkpoint of another format, a folder that is no checkpoint at all.
Each is refused by ``medgan sample``, ``medgan info`` and ``medgan train --resume`` with one
``Error:`` line that names the file, exit code 2, and without unpickling anything.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint

from medgan import __version__
from medgan.checkpoint import FORMAT_VERSION, sha256_file
from medgan.cli import main


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("pristine"))


def step_dir(run: Path) -> Path:
    return next((run / "checkpoints").glob("step-*"))


def edit_sidecar(folder: Path, **changes) -> None:
    """Change ``checkpoint.json`` fields (the sidecar's own hash is not recorded anywhere)."""
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta.update(changes)
    (folder / "checkpoint.json").write_text(json.dumps(meta))


def pickle_next_to_weights(folder: Path) -> list[str]:
    (folder / "model.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return [str(folder / "model.pt"), "refusing a checkpoint folder that contains pickle files",
            "safetensors"]


def flip_one_byte(folder: Path) -> list[str]:
    path = folder / "generator_ema.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return [str(path), "SHA-256 does not match checkpoint.json"]


def listed_file_missing(folder: Path) -> list[str]:
    (folder / "discriminator.safetensors").unlink()
    return [str(folder / "discriminator.safetensors"), "listed in checkpoint.json but missing"]


def other_format(folder: Path) -> list[str]:
    edit_sidecar(folder, format_version=FORMAT_VERSION + 1, medgan_version="9.0.0")
    return [str(folder), f"checkpoint format {FORMAT_VERSION + 1} written by medgan 9.0.0",
            f"cannot be read by medgan {__version__}"]


def sidecar_missing(folder: Path) -> list[str]:
    (folder / "checkpoint.json").unlink()
    return [str(folder), "missing checkpoint.json"]


def sidecar_not_json(folder: Path) -> list[str]:
    (folder / "checkpoint.json").write_bytes(b"\x80\x04\x95 not json")
    return [str(folder / "checkpoint.json"), "not valid JSON"]


def pointer_corrupt(folder: Path) -> list[str]:
    latest = folder.parent / "latest.json"
    latest.write_text('{"latest": ')
    return [str(latest), "unreadable checkpoint pointer"]


FAULTS: dict[str, Callable[[Path], list[str]]] = {
    "pickle-file-in-folder": pickle_next_to_weights,
    "weight-file-one-byte-flipped": flip_one_byte,
    "listed-file-missing": listed_file_missing,
    "other-format-version": other_format,
    "sidecar-missing": sidecar_missing,
    "sidecar-not-json": sidecar_not_json,
    "latest-json-corrupt": pointer_corrupt,
}


def run_command(command: str, run: Path, tmp_path: Path):
    args = {
        "sample": ["sample", "--checkpoint", str(run), "-n", "2", "--out",
                   str(tmp_path / "synthetic"), "--device", "cpu", "--no-progress"],
        "info": ["info", str(run)],
        "train-resume": ["train", "--out", str(run), "--resume", "--device", "cpu",
                         "--no-progress"],
    }[command]
    return CliRunner().invoke(main, args)


def assert_refused(result, names: list[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exit_code == 2, output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", ["sample", "info", "train-resume"])
def test_refused(tmp_path, pristine, command, fault):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    names = FAULTS[fault](step_dir(run))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert_refused(run_command(command, run, tmp_path), names)
    assert not (tmp_path / "synthetic").exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_pickle_disguised_as_safetensors_is_never_unpickled(tmp_path, pristine):
    """A pickle under a safetensors name, with its hash re-recorded in the sidecar (so the
    integrity check passes), fails as 'not safetensors' and its payload never runs."""
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    folder = step_dir(run)
    marker = tmp_path / "payload-ran"
    weights = folder / "generator_ema.safetensors"
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["files"][weights.name] = sha256_file(weights)
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    for command in ("sample", "train-resume"):
        assert_refused(run_command(command, run, tmp_path),
                       [str(weights), "cannot be read as safetensors"])
    assert not marker.exists(), "the pickle was loaded"


class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_newer_medgan_version_with_the_same_format_is_read(tmp_path, pristine):
    """The format version decides, not the package version that wrote the checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    edit_sidecar(step_dir(run), medgan_version="99.0.0")
    result = run_command("sample", run, tmp_path)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["info", str(run), "--json"])
    assert json.loads(result.stdout)["medgan_version"] == "99.0.0"


@pytest.mark.parametrize(("args", "names"), [
    (["-n", "0"], ["'-n' / '--n'", "0 is not in the range x>=1"]),
    (["-n", "-3"], ["'-n' / '--n'", "-3 is not in the range x>=1"]),
    (["--batch-size", "0"], ["'--batch-size'", "0 is not in the range x>=1"]),
    (["--seed", "-1"], ["'--seed'", "-1 is not in the range x>=0"]),
    (["--max-similarity", "1.5", "--real-data", "x"], ["'--max-similarity'", "1.5"]),
    (["--min-lesion-voxels", "-1"], ["'--min-lesion-voxels'", "-1"]),
    (["--device", "tpu"], ["'--device'", "'tpu' is not one of"]),
], ids=["n-0", "n-negative", "batch-size-0", "seed-negative", "max-similarity-1.5",
        "min-lesion-voxels-negative", "device-unknown"])
def test_sample_option_errors(tmp_path, pristine, args, names):
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(pristine), "--out",
                                       str(out), "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("Error:"))
    for name in names:
        assert name in line, line
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing-path", "empty-folder", "weights-without-sidecar",
                                   "a-nifti-file"])
def test_sample_from_something_that_is_no_checkpoint(tmp_path, pristine, where):
    target = tmp_path / "ckpt"
    named, problem = target, "no medgan checkpoint here (no checkpoint.json or " \
                             "checkpoints/latest.json)"
    if where == "missing-path":
        problem = "checkpoint does not exist"
    else:
        target.mkdir()
    if where == "weights-without-sidecar":
        shutil.copy(step_dir(pristine) / "generator.safetensors", target)
    elif where == "a-nifti-file":
        target = target / "scan.nii.gz"
        target.write_bytes(b"\x1f\x8b")
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(target), "-n", "2",
                                       "--out", str(tmp_path / "synthetic"), "--no-progress"])
    assert_refused(result, [f"{named}: {problem}"])
