"""Unwritable output folders and a full disk during ``medgan train`` and ``medgan sample``.

Expected: one ``Error:`` line naming the place, exit code 2, and no corrupted output: a failed
checkpoint write keeps the previous checkpoint (``latest.json`` still points to it and it
verifies); a failed sampling run never leaves a datalist that lists a missing file.

The tests run as root on CI, where permission bits do not stop writes, and most machines
cannot fill a disk on demand: faults are injected where medgan's writes meet the OS (the
exceptions are those the OS and safetensors raise). The chmod and tmpfs variants run where the
machine allows them and say why they skip otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint
from helpers_process import files_of, tiny_train_config, write_yaml
from safetensors import SafetensorError

import medgan.sampling.output as output_module
from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.checkpoint import store as checkpoint_module
from medgan.cli import main
from medgan.sampling import sample
from medgan.training import trainer as trainer_module

# what safetensors raises when the disk fills up (seen on a full tmpfs)
SAFETENSORS_ENOSPC = SafetensorError(
    "Error while serializing: I/O error: No space left on device (os error 28)")


def error_line(result) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exit_code == 2, output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def train_cli(config: Path, data: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["train", "--config", str(config), "--data", str(data),
                                     "--out", str(out), "--device", "cpu", "--no-progress",
                                     *extra])


@pytest.fixture
def config(tmp_path) -> Path:
    return write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=6, checkpoint_every=2))


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("gan"))


# ---- unwritable output folder ----------------------------------------------------------------
def _refuse_under(monkeypatch, folder: Path) -> None:
    """Every mkdir/open for writing below ``folder`` fails with EACCES, as in a 0o500 folder."""
    real_mkdir, real_open = Path.mkdir, Path.open

    def inside(path: Path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    def mkdir(self, *args, **kwargs):
        if inside(self):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    def open_(self, mode="r", *args, **kwargs):
        if inside(self) and set(mode) & set("wax+"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "open", open_)


def _read_only_folder(tmp_path: Path) -> Path:
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        (parent / "probe").touch()
    except PermissionError:
        return parent
    (parent / "probe").unlink()
    parent.chmod(0o700)
    pytest.skip(f"permission bits do not stop this user (uid {os.getuid()}) from writing; the "
                "simulated variant covers the case")


@pytest.mark.parametrize("how", ["chmod-0o500", "simulated-EACCES"])
def test_train_refuses_an_unwritable_run_folder_before_loading_data(
        tmp_path, config, train_data, monkeypatch, how):
    parent = tmp_path / "read-only"
    if how == "chmod-0o500":
        parent = _read_only_folder(tmp_path)
    else:
        parent.mkdir()
        _refuse_under(monkeypatch, parent)

    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the output was checked")

    monkeypatch.setattr(trainer_module, "_load_bank", no_data)
    line = error_line(train_cli(config, train_data, parent / "run"))
    assert str(parent / "run") in line and "Permission denied" in line
    assert not any(parent.iterdir())


@pytest.mark.parametrize("how", ["chmod-0o500", "simulated-EACCES"])
def test_sample_refuses_an_unwritable_output_folder_before_generating(
        tmp_path, generator_run, monkeypatch, how):
    parent = tmp_path / "read-only"
    if how == "chmod-0o500":
        parent = _read_only_folder(tmp_path)
    else:
        parent.mkdir()
        _refuse_under(monkeypatch, parent)
    def no_generation(*args, **kwargs):
        raise AssertionError("samples were generated before the output was checked")

    monkeypatch.setattr(importlib.import_module("medgan.sampling.job"), "write_samples",
                        no_generation)
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(generator_run), "-n", "4",
                                       "--out", str(parent / "synthetic"), "--device", "cpu",
                                       "--no-progress"])
    line = error_line(result)
    assert str(parent / "synthetic") in line and "Permission denied" in line
    assert not any(parent.iterdir())


# ---- disk full during a checkpoint write -----------------------------------------------------
@pytest.mark.parametrize("fault", ["safetensors", "sidecar", "latest.json"])
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
        tmp_path, config, train_data, monkeypatch, fault):
    """The checkpoint of step 4 fails at three points of its write; step 2 stays the latest."""
    real_save, real_json = checkpoint_module.save_file, checkpoint_module.write_json_atomic

    def save_file(tensors, path, *args, **kwargs):
        if fault == "safetensors" and "step-00000004" in path:
            Path(path).write_bytes(b"\0" * 100)  # a partial file, as a full disk leaves it
            raise SAFETENSORS_ENOSPC
        return real_save(tensors, path, *args, **kwargs)

    def write_json(path, data):
        if fault == "sidecar" and "step-00000004" in str(path) or \
                fault == "latest.json" and path.name == "latest.json" and data["step"] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_json(path, data)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    monkeypatch.setattr(checkpoint_module, "write_json_atomic", write_json)
    run = tmp_path / "run"
    line = error_line(train_cli(config, train_data, run))
    assert "step-00000004" in line and "No space left on device" in line
    assert f"previous checkpoint {run / 'checkpoints' / 'step-00000002'} is kept" in line
    assert resolve_checkpoint(run).name == "step-00000002"
    assert read_sidecar(resolve_checkpoint(run))["step"] == 2  # still verifies
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the failed write left temporary files"
    monkeypatch.undo()  # space freed: the run continues from step 2
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--device", "cpu",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_sidecar(resolve_checkpoint(run))["step"] == 6


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` (skips where mounting is not allowed)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); the "
                    "injected-fault tests cover the case")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    """Write zeros into ``folder`` until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)


def test_real_full_disk_during_training(tmp_path, config, train_data, monkeypatch):
    """The same on a real, tiny tmpfs: filled up right after the first checkpoint."""
    run = tmp_path / "disk" / "run"
    real_save = checkpoint_module.save_checkpoint
    monkeypatch.setattr(trainer_module, "_load_bank", _bank_outside(tmp_path, trainer_module))

    def save_then_fill(checkpoint_dir, step, *args, **kwargs):
        folder = real_save(checkpoint_dir, step, *args, **kwargs)
        if step == 2:
            _fill(tmp_path / "disk")
        return folder

    import medgan.training.state as state_module

    monkeypatch.setattr(state_module, "save_checkpoint", save_then_fill)
    with tiny_disk(tmp_path / "disk", "4m"):
        line = error_line(train_cli(config, train_data, run))
        assert "No space left on device" in line, line
        assert resolve_checkpoint(run).name == "step-00000002"
        assert read_sidecar(resolve_checkpoint(run))["step"] == 2
        assert not list((run / "checkpoints").glob(".step-*"))


def _bank_outside(tmp_path: Path, module):
    """Keep the patch cache off the tiny disk (it is not what this test is about)."""
    real = module._load_bank

    def load(config, data, run_dir, seed, skip_bad, progress, *args, **kwargs):
        cfg = config.model_copy(update={"data": config.data.model_copy(
            update={"cache_dir": str(tmp_path / "cache")})})
        return real(cfg, data, run_dir, seed, skip_bad, progress, *args, **kwargs)

    return load


# ---- disk full during sampling ---------------------------------------------------------------
def _previous_output(generator_run: Path, out: Path) -> dict[str, bytes]:
    sample(generator_run, 3, out, seed=1, progress=False)
    return files_of(out)


def test_disk_full_while_writing_samples_keeps_the_previous_output(
        tmp_path, generator_run, monkeypatch):
    from medgan.sampling import writer as writer_module

    out = tmp_path / "synthetic"
    before = _previous_output(generator_run, out)
    calls = {"n": 0}

    def open_(path, mode="r", *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(writer_module, "open", open_, raising=False)
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(generator_run), "-n", "12",
                                       "--out", str(out), "--overwrite", "--batch-size", "4",
                                       "--device", "cpu", "--no-progress"])
    line = error_line(result)
    assert "synth_" in line and "cannot be written (No space left on device)" in line
    assert files_of(out) == before  # old set intact, nothing half-written, no partial folder


def test_disk_full_while_writing_the_datalist_lists_no_missing_file(
        tmp_path, generator_run, monkeypatch):
    out = tmp_path / "synthetic"
    _previous_output(generator_run, out)
    real = output_module.write_json_atomic

    def write_json(path, data):
        if path.name == "dataset.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(output_module, "write_json_atomic", write_json)
    result = CliRunner().invoke(main, ["sample", "--checkpoint", str(generator_run), "-n", "5",
                                       "--out", str(out), "--overwrite", "--device", "cpu",
                                       "--no-progress"])
    line = error_line(result)
    assert str(out / "dataset.json") in line and "no new dataset.json" in line
    assert not (out / "dataset.json").exists()  # none rather than one listing missing files
    assert not list(out.glob(".partial-*")) and not list(out.rglob(".*.tmp*"))


def test_real_full_disk_while_sampling(tmp_path, generator_run):
    """On a real 64 KiB tmpfs, a 200-sample run fills the disk part-way."""
    with tiny_disk(tmp_path / "disk", "64k"):
        out = tmp_path / "disk" / "synthetic"
        result = CliRunner().invoke(main, ["sample", "--checkpoint", str(generator_run), "-n",
                                           "200", "--out", str(out), "--device", "cpu",
                                           "--no-progress"])
        line = error_line(result)
        assert "No space left on device" in line
        assert not (out / "dataset.json").exists()
        assert not list(out.glob(".partial-*"))
        json.dumps(line)  # one printable line


def test_check_data_json_report_to_a_full_device(make_dataset, make_config):
    """A real ENOSPC, anywhere: /dev/full accepts the open and fails the write."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    result = CliRunner().invoke(main, ["check-data", str(make_dataset(n=1)), "--config",
                                       str(make_config()), "--json", "/dev/full",
                                       "--no-progress"])
    line = error_line(result)
    assert line == "Error: /dev/full: cannot write the report (No space left on device)"
