"""Helpers of the fault-injection tests: real ``python -m medgan`` processes and tiny runs.

Subprocesses run with one torch thread (the machines are shared), write their output to files
(a full pipe would block them) and start a new session, so that a test can signal the whole
process group as ``docker stop``, Slurm or a terminal's Ctrl-C do. Every process a test starts
is killed at teardown if it is still running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers_data import config_dict

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
START_TIMEOUT_S = 120  # waiting for a condition in a child (imports + data loading on a busy CI)


def tiny_train_config(steps: int = 40, checkpoint_every: int = 2, **train: Any) -> dict[str, Any]:
    """A 2D CT config that trains in a fraction of a second per step on one CPU thread."""
    cfg = config_dict("ct", 2, patches_per_case=6, lesion_free_fraction=0.2)
    cfg["model"] = {"latent_dim": 8, "ngf": 4, "ndf": 4}
    cfg["train"] = {"steps": steps, "batch_size": 4, "log_every": 1, "sample_every": 10_000,
                    "checkpoint_every": checkpoint_every, "ema_decay": 0.9, **train}
    return cfg


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def latest_step(run: Path) -> int | None:
    """The step ``<run>/checkpoints/latest.json`` points to (None: none yet / mid-replace)."""
    try:
        return int(json.loads((run / "checkpoints" / "latest.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def _default_sigint() -> None:
    """A shell that starts pytest in the background ignores SIGINT, and Python then installs no
    KeyboardInterrupt handler in the children; give them the default back, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Medgan:
    """One ``python -m medgan ...`` child process."""

    args: list[str]
    logs: Path
    proc: subprocess.Popen = field(init=False)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._out = open(self.logs / "stdout.txt", "w")  # noqa: SIM115 (closed in finish)
        self._err = open(self.logs / "stderr.txt", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "medgan", *self.args], env=ENV,
                                     stdout=self._out, stderr=self._err, start_new_session=True,
                                     preexec_fn=_default_sigint)

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr.txt").read_text()

    @property
    def stdout(self) -> str:
        return (self.logs / "stdout.txt").read_text()

    def wait_until(self, condition: Callable[[], Any], what: str,
                   timeout: float = START_TIMEOUT_S) -> Any:
        """Poll ``condition`` every 20 ms while the child runs; fail if it ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"medgan {self.args[0]} ended (exit {self.proc.returncode}) before "
                            f"{what}\nstderr:\n{self.stderr[-3000:]}")
            time.sleep(0.02)
        pytest.fail(f"timed out waiting for {what}\nstderr:\n{self.stderr[-3000:]}")

    def send(self, sig: int, group: bool = False) -> None:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 120) -> int:
        """Wait for the exit code (a negative number: killed by that signal)."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
            self._err.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()
        self._err.close()


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


SIGNALS = [pytest.param(signal.SIGINT, 130, id="SIGINT"),
           pytest.param(signal.SIGTERM, 143, id="SIGTERM")]
