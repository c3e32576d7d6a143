"""Generators for the augmentation tests: real tiny checkpoints, and a "blob" stand-in whose
lesion is a ball of known size, for exact geometry checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_blob import BlobNet, blob_generator  # noqa: F401  (fixtures use them)
from helpers_checkpoint import make_checkpoint


@pytest.fixture(scope="session")
def ckpt_2d(tmp_path_factory) -> Path:
    """Real 2D CT checkpoint (untrained), 32x32 patches."""
    return make_checkpoint(tmp_path_factory.mktemp("aug2d"), spatial_dims=2, patch_size=32)


@pytest.fixture(scope="session")
def ckpt_3d(tmp_path_factory) -> Path:
    """Real 3D CT checkpoint (untrained, no EMA), 32^3 patches."""
    return make_checkpoint(tmp_path_factory.mktemp("aug3d"), spatial_dims=3, patch_size=32,
                           ema=False, ngf=4)
