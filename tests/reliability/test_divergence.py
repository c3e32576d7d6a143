"""Diverged training through the CLI: exit 2, one line naming the step and the last good
checkpoint, and that checkpoint left as it was (the library-level NaN guard is tested in
tests/training/test_trainer.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from helpers_process import tiny_train_config, write_yaml
from safetensors.torch import load_file

from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.cli import main
from medgan.training import trainer as trainer_module


def train_cli(*args: str | Path):
    return CliRunner().invoke(main, ["train", *map(str, args), "--device", "cpu",
                                     "--no-progress"])


def the_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_absurd_learning_rate(tmp_path, train_data):
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=6))
    run = tmp_path / "run"
    line = the_error(train_cli("--config", config, "--data", train_data, "--out", run,
                               "--set", "train.lr_g=1e20", "--set", "train.lr_d=1e20"))
    assert "training diverged" in line and "at step 1" in line
    assert "last good checkpoint: none was written yet" in line
    assert not (run / "checkpoints").exists()  # nothing broken was saved


def test_nan_loss_names_the_step_and_the_last_good_checkpoint(tmp_path, train_data,
                                                              monkeypatch):
    real_loss = trainer_module.generator_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(trainer_module, "generator_loss", poisoned)
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=8))
    run = tmp_path / "run"
    line = the_error(train_cli("--config", config, "--data", train_data, "--out", run))
    good = run / "checkpoints" / "step-00000004"
    assert "at step 5" in line and f"last good checkpoint: {good}" in line
    assert resolve_checkpoint(run) == good and read_sidecar(good)["step"] == 4
    monkeypatch.undo()  # the user lowers the rate / fixes the cause and resumes
    result = train_cli("--out", run, "--resume")
    assert result.exit_code == 0, result.output
    weights = load_file(str(resolve_checkpoint(run) / "generator.safetensors"))
    assert read_sidecar(resolve_checkpoint(run))["step"] == 8
    assert all(bool(v.float().isfinite().all()) for v in weights.values())


def test_divergence_right_after_resume_names_the_checkpoint_resumed_from(
        tmp_path, train_data, monkeypatch):
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=4))
    run = tmp_path / "run"
    assert train_cli("--config", config, "--data", train_data, "--out", run).exit_code == 0
    real_loss = trainer_module.generator_loss
    monkeypatch.setattr(trainer_module, "generator_loss",
                        lambda *a, **k: real_loss(*a, **k) * float("nan"))
    line = the_error(train_cli("--out", run, "--resume", "--steps", "8"))
    assert "at step 5" in line
    assert f"last good checkpoint: {run / 'checkpoints' / 'step-00000004'}" in line
    assert read_sidecar(resolve_checkpoint(run))["step"] == 4


def test_learning_rate_changed_on_resume_is_used(tmp_path, train_data):
    """``--set train.lr_*`` on resume must reach the optimisers, not only the saved config."""
    config = write_yaml(tmp_path / "config.yaml", tiny_train_config(steps=2))
    run = tmp_path / "run"
    assert train_cli("--config", config, "--data", train_data, "--out", run).exit_code == 0
    line = the_error(train_cli("--out", run, "--resume", "--steps", "4", "--set",
                               "train.lr_g=1e20", "--set", "train.lr_d=1e20"))
    assert "training diverged" in line and "at step 3" in line
