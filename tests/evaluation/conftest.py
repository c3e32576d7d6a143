"""Phantom scans and a tiny generator checkpoint shared by the evaluation tests.

Six CT phantoms of 48 x 48 x 8 voxels (1 mm): a noisy body ellipse with one bright spherical
lesion at a case-dependent position, written as NIfTI with a decathlon ``dataset.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_checkpoint import make_checkpoint

SHAPE = (48, 48, 8)
BODY_HU, LESION_HU, AIR_HU, NOISE_HU = 20.0, 180.0, -1000.0, 10.0


def phantom(seed: int, shape: tuple[int, int, int] = SHAPE, radius: float = 5.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """CT image (HU) and binary label ``(X, Y, Z)`` with one spherical lesion."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    body = ((x - shape[0] / 2) / 20) ** 2 + ((y - shape[1] / 2) / 18) ** 2 <= 1.0
    cx, cy = 16 + 3 * (seed % 5), 18 + 2 * (seed % 4)
    lesion = (x - cx) ** 2 + (y - cy) ** 2 + (z - shape[2] / 2) ** 2 <= radius**2
    image = np.where(body, BODY_HU, AIR_HU).astype(np.float32)
    image[lesion] = LESION_HU
    image[body] += rng.normal(0, NOISE_HU, int(body.sum())).astype(np.float32)
    return image, lesion.astype(np.uint8)


def write_phantoms(folder: Path, n: int = 6) -> Path:
    """``n`` phantoms as ``imagesTr``/``labelsTr`` NIfTI + ``dataset.json``; returns the JSON."""
    entries = []
    for i in range(n):
        image, label = phantom(i)
        for sub, arr in (("imagesTr", image), ("labelsTr", label)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(folder / sub / f"case_{i:03d}.nii.gz"))
        entries.append({"image": f"imagesTr/case_{i:03d}.nii.gz",
                        "label": f"labelsTr/case_{i:03d}.nii.gz"})
    path = folder / "dataset.json"
    path.write_text(json.dumps({"name": "phantoms", "training": entries}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory) -> Path:
    """Datalist of six 48 x 48 x 8 CT phantoms."""
    return write_phantoms(tmp_path_factory.mktemp("phantoms"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Untrained 2D CT generator run folder: 32 x 32 patches at 1 mm, HU window [-200, 300]."""
    return make_checkpoint(tmp_path_factory.mktemp("gan"), spatial_dims=2, patch_size=32,
                           spacing_mm=(1.0, 1.0, 1.0))
