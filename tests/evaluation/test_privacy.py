"""Memorisation audit: a copied training patch is flagged, random noise is not."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medgan.evaluation.inputs import real_bank, resolve_settings
from medgan.evaluation.privacy import evaluate_privacy, pair_ssim


def write_synthetic(folder: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    """A ``medgan sample``-like folder: (X, Y, 1) NIfTI pairs + dataset.json."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        for sub, arr in (("imagesTr", image), ("labelsTr", mask)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr[..., None], np.eye(4)),
                     str(folder / sub / f"synth_{i:05d}.nii.gz"))
        entries.append({"image": f"./imagesTr/synth_{i:05d}.nii.gz",
                        "label": f"./labelsTr/synth_{i:05d}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({"training": entries, "medgan": {}}))
    return folder


def test_copy_flagged_noise_not(phantom_data, tiny_checkpoint, tmp_path) -> None:
    settings = resolve_settings(write_synthetic(tmp_path / "probe", [], []), tiny_checkpoint)
    bank = real_bank(phantom_data, settings, progress=False)
    k = int(torch.nonzero(bank.has_lesion)[3])
    mapping = settings.intensity
    copy = np.asarray(mapping.inverse(bank.images[k].numpy()))[0].astype(np.float32)
    noise = np.random.default_rng(0).normal(20, 200, copy.shape).astype(np.float32)
    mask = bank.masks[k, 0].numpy()
    syn = write_synthetic(tmp_path / "syn", [copy, noise], [mask, mask])
    report = evaluate_privacy(phantom_data, syn, checkpoint=tiny_checkpoint, threshold=0.95,
                              out=tmp_path / "audit", progress=False)
    copied, noisy = report["samples"]
    assert copied["ncc"] > 0.99 and copied["ssim"] > 0.99
    assert noisy["ncc"] < 0.5
    assert report["n_above_threshold"] == 1 and report["fraction_above_threshold"] == 0.5
    assert copied["nearest_case"] == bank.case_ids[int(bank.case_index[k])]
    assert report["real_vs_other_patients_ncc"]["n"] > 0
    for name in ("report.json", "report.md", "closest_pairs.png"):
        assert (tmp_path / "audit" / name).is_file()


def test_pair_ssim_identical_is_one() -> None:
    x = torch.rand(3, 2, 32, 32) * 2 - 1
    assert torch.allclose(pair_ssim(x, x), torch.ones(3), atol=1e-5)


def test_settings_needed_without_recorded_checkpoint(tmp_path) -> None:
    import pytest

    from medgan.errors import ConfigError

    folder = write_synthetic(tmp_path / "syn", [], [])
    with pytest.raises(ConfigError, match="`checkpoint`"):
        resolve_settings(folder)


def test_cli_errors_are_one_line(phantom_data, tmp_path) -> None:
    from click.testing import CliRunner

    from medgan.cli import main

    for command in ("privacy", "quality"):
        result = CliRunner().invoke(main, ["evaluate", command, "--real", str(phantom_data),
                                           "--synthetic", str(tmp_path / "none")])
        assert result.exit_code == 2
        assert "dataset.json not found" in result.output and "Traceback" not in result.output
