"""Shared fixtures: phantom cases, decathlon datasets and config files in tmp folders.

The phantoms themselves (a body-like ellipsoid with a spherical lesion, in the physical units of
each modality) are built by :mod:`helpers_data`, which tests import for the plain functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers_data import (
    Phantom,
    config_dict,
    phantom_arrays,
    spacing_affine,
    write_datalist,
    write_nifti,
)


def pytest_configure(config):
    """One intra-op thread: the test tensors are tiny, and on a shared CI machine torch's thread
    pool waits for busy cores (checks ran 10-30x slower with two threads under load)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def make_phantom(tmp_path):
    """Factory writing ``<folder>/imagesTr/<name>.nii.gz`` + ``labelsTr/<name>.nii.gz``.

    Multi-channel images are written nnU-Net style as ``<name>_0000.nii.gz``, ``_0001`` ...
    and returned as a list of paths.
    """

    def make(name: str = "case_001", folder: Path | None = None, shape=(48, 48, 12),
             modality: str = "ct", channels: int = 1, spacing=(1.0, 1.0, 1.0),
             affine: np.ndarray | None = None, image_dtype: Any = np.float32,
             **kwargs: Any) -> Phantom:
        folder = tmp_path / "data" if folder is None else folder
        image, label, centre = phantom_arrays(shape, modality, channels, spacing, **kwargs)
        affine = spacing_affine(spacing) if affine is None else affine
        label_path = write_nifti(folder / "labelsTr" / f"{name}.nii.gz", label, affine)
        if channels == 1:
            image_path: Path | list[Path] = write_nifti(
                folder / "imagesTr" / f"{name}.nii.gz", image, affine, image_dtype
            )
        else:
            image_path = [
                write_nifti(folder / "imagesTr" / f"{name}_{c:04d}.nii.gz", image[c], affine,
                            image_dtype)
                for c in range(channels)
            ]
        return Phantom(image_path, label_path, image, label, affine, centre)

    return make


@pytest.fixture
def make_dataset(tmp_path, make_phantom):
    """Factory for a decathlon dataset: ``n`` phantoms + ``dataset.json``; returns the JSON path."""

    def make(n: int = 2, folder: Path | None = None, **kwargs: Any) -> Path:
        folder = tmp_path / "dataset" if folder is None else folder
        phantoms = [
            make_phantom(f"case_{i:03d}", folder=folder, seed=i, **kwargs) for i in range(n)
        ]
        return write_datalist(folder / "dataset.json", phantoms)

    return make


@pytest.fixture
def make_config(tmp_path):
    """Factory writing a config YAML (see :func:`config_dict`); returns its path."""
    counter = iter(range(1_000_000))

    def make(modality: str = "ct", spatial_dims: int = 2, raw: dict[str, Any] | None = None,
             **data: Any) -> Path:
        path = tmp_path / "configs" / f"config_{next(counter)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        content = raw if raw is not None else config_dict(modality, spatial_dims, **data)
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        return path

    return make
