"""Tiny generator checkpoints (untrained, CPU) shared by the sampling tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_checkpoint import make_checkpoint


@pytest.fixture(scope="session")
def ckpt_2d(tmp_path_factory) -> Path:
    """2D CT run folder, 32x32 patches, spacing (1.5, 1.5, 3.0) mm, EMA weights."""
    return make_checkpoint(tmp_path_factory.mktemp("run2d"), spatial_dims=2, patch_size=32)


@pytest.fixture(scope="session")
def ckpt_3d(tmp_path_factory) -> Path:
    """3D PET run folder, 32^3 patches, no EMA weights."""
    return make_checkpoint(tmp_path_factory.mktemp("run3d"), spatial_dims=3, patch_size=32,
                           modality="pet", ema=False, ngf=4)

