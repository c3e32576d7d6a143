"""Fixtures of the fault-injection tests (helpers: :mod:`helpers_process`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_process import Medgan


@pytest.fixture
def medgan_process(tmp_path):
    """Factory starting ``python -m medgan ARGS`` in the background; cleans up at teardown."""
    started: list[Medgan] = []

    def start(*args: str | Path) -> Medgan:
        child = Medgan([str(a) for a in args], tmp_path / "logs" / f"{len(started):02d}")
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


@pytest.fixture
def train_data(make_dataset) -> Path:
    """Two 40 x 40 x 18 CT phantoms (the trainer tests' dataset)."""
    return make_dataset(n=2, shape=(40, 40, 18))
