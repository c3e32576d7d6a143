"""CPU thread choice (medgan.threads) and ``--threads`` of every command that runs torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers_checkpoint import make_checkpoint

import medgan.threads as threads_module
from medgan.cli import main
from medgan.errors import ConfigError, OutputError
from medgan.threads import (
    ENV_VAR,
    apply_config_threads,
    configure_threads,
    threads_for_command,
    usable_cores,
)

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = (ENV_VAR, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No thread setting from the shell that runs the tests; torch back at 1 thread after."""
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(1)
    threads_module._current = None


class Stop(OutputError):
    """Raised by the stand-in library functions once they have looked at torch."""


def test_precedence(monkeypatch):
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 7)
    assert configure_threads(None).threads == 7
    assert configure_threads(None).source == "automatic"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (configure_threads(None).threads, configure_threads(None).source) == (
        3, "OMP_NUM_THREADS")
    monkeypatch.setenv(ENV_VAR, "2")
    assert (configure_threads(None).threads, configure_threads(None).source) == (2, ENV_VAR)
    assert configure_threads(5).threads == 5 == torch.get_num_threads()
    monkeypatch.setenv(ENV_VAR, "auto")  # overrides OMP_NUM_THREADS
    assert configure_threads(None).threads == 7
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_threads(None, fallback=1).threads == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_environment_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ConfigError, match=f"{ENV_VAR} must be a positive integer or 'auto', "
                                          f"not '{value}'"):
        configure_threads(None)


def test_config_threads_yield_to_option_and_environment(monkeypatch):
    configure_threads(None, fallback=2)
    apply_config_threads(3)
    assert torch.get_num_threads() == 3
    configure_threads(2)
    apply_config_threads(3)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(ENV_VAR, "4")
    configure_threads(None)
    apply_config_threads(3)
    assert torch.get_num_threads() == 4
    apply_config_threads(None)
    assert torch.get_num_threads() == 4


def test_command_scope_restores_the_previous_count():
    torch.set_num_threads(1)
    with threads_for_command(3) as choice:
        assert choice.threads == torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1 and threads_module.current_choice() is None


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True, timeout=120)


def test_cli_import_does_not_load_torch():
    code = "import sys, medgan.cli, medgan.threads; print('torch' in sys.modules)"
    assert _python(code).stdout.strip() == "False"


def test_usable_cores_are_at_most_the_cpus():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_before_torch_passive_wait_reaches_openmp_and_affinity_counts():
    """A fresh process pinned to one CPU: the automatic choice is 1 thread, and the OpenMP
    runtime reports the passive wait policy (OMP_DISPLAY_ENV prints what it read)."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
            "from medgan.threads import configure_threads; c = configure_threads();"
            "import torch; torch.ones(10_000).sum();"
            "print(c.threads, c.usable_cores, torch.get_num_threads(), c.source)")
    done = _python(code, OMP_DISPLAY_ENV="TRUE")
    assert done.stdout.split() == ["1", "1", "1", "automatic"]
    if "OPENMP DISPLAY ENVIRONMENT" in done.stderr:  # GNU and LLVM OpenMP print it
        assert re.search(r"OMP_WAIT_POLICY = '?PASSIVE", done.stderr), done.stderr


def test_a_set_wait_policy_is_kept():
    code = ("from medgan.threads import configure_threads; c = configure_threads();"
            "print(c.wait_policy)")
    assert _python(code, OMP_WAIT_POLICY="ACTIVE").stdout.strip() == "ACTIVE"


# ---- --threads reaches torch inside every command ----
def _recorder(seen: list[int]):
    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Stop("stopped by the test")

    return record


def _invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_train_threads_reach_torch(tmp_path, make_config, monkeypatch):
    from medgan.training import trainer

    seen: list[int] = []
    monkeypatch.setattr(trainer, "train", _recorder(seen))
    config = make_config()
    result = _invoke(["train", "--config", config, "--out", tmp_path / "run", "--threads", "3"])
    assert result.exit_code == 2 and "stopped by the test" in result.output
    result = _invoke(["train", "--config", config, "--out", tmp_path / "run"],
                     env={ENV_VAR: "2"})
    assert result.exit_code == 2
    assert seen == [3, 2] and torch.get_num_threads() == 1


def test_train_config_threads_reach_the_loop(tmp_path, make_dataset, make_config, monkeypatch):
    """train.threads applies inside the real trainer unless --threads overrides it."""
    from medgan.training import trainer

    seen: list[int] = []
    monkeypatch.setattr(trainer, "train_loop", _recorder(seen))
    data = make_dataset(n=1, shape=(40, 40, 10))
    config = make_config(raw=None, patch_size=32)
    for i, extra in enumerate([[], ["--threads", "2"]]):
        result = _invoke(["train", "--config", config, "--data", data, "--out",
                          tmp_path / f"run{i}", "--set", "train.threads=3", "--no-progress",
                          "--device", "cpu", *extra])
        assert result.exit_code == 2, result.output
    assert seen == [3, 2]


def test_sample_threads_reach_torch(tmp_path, monkeypatch):
    import medgan.sampling

    seen: list[int] = []
    monkeypatch.setattr(medgan.sampling, "sample", _recorder(seen))
    ckpt = make_checkpoint(tmp_path / "run", spatial_dims=2, patch_size=32)
    result = _invoke(["sample", "--checkpoint", ckpt, "--n", "2", "--out", tmp_path / "out",
                      "--threads", "3"])
    assert result.exit_code == 2 and seen == [3]


@pytest.mark.parametrize("command", ["quality", "privacy"])
def test_evaluate_quality_privacy_threads_reach_torch(tmp_path, monkeypatch, command):
    import medgan.evaluation

    seen: list[int] = []
    monkeypatch.setattr(medgan.evaluation, f"evaluate_{command}", _recorder(seen))
    result = _invoke(["evaluate", command, "--real", tmp_path, "--synthetic", tmp_path,
                      "--threads", "2"])
    assert result.exit_code == 2 and seen == [2]


def test_check_data_threads_reach_torch(tmp_path, make_dataset, make_config, monkeypatch):
    import medgan.data

    seen: list[int] = []
    monkeypatch.setattr(medgan.data, "check_dataset", _recorder(seen))
    result = _invoke(["check-data", make_dataset(n=1), "--config", make_config(),
                      "--threads", "2"])
    assert result.exit_code == 2 and seen == [2]


def test_bad_environment_value_is_one_line_error(tmp_path, make_config):
    result = _invoke(["train", "--config", make_config(), "--out", tmp_path / "run"],
                     env={ENV_VAR: "lots"})
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {ENV_VAR} must be a positive integer or 'auto', " \
                                    "not 'lots'"
