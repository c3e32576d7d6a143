"""medgan.evaluation.inputs: where the evaluation settings come from, reading synthetic pairs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers_data import config_dict

from medgan.checkpoint import checkpoint_sha256, resolve_checkpoint
from medgan.config import config_from_dict
from medgan.errors import ConfigError, DataError
from medgan.evaluation.inputs import (
    SyntheticSet,
    check_shapes,
    read_synthetic,
    resolve_settings,
)


def write_synthetic(folder: Path, shapes: list[tuple[int, ...]] | None = None,
                    medgan: dict[str, Any] | None = None, channels: int = 1,
                    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    **dataset: Any) -> Path:
    """A ``medgan sample``-like folder: NIfTI pairs (default: none) and its dataset.json."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    rng = np.random.default_rng(0)
    entries = []
    for i, shape in enumerate(shapes or []):
        images = []
        for c in range(channels):
            name = f"imagesTr/synth_{i:05d}_{c:04d}.nii.gz"
            arr = rng.normal(20.0, 50.0, shape).astype(np.float32)
            (folder / "imagesTr").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(arr, affine), str(folder / name))
            images.append(f"./{name}")
        label = np.zeros(shape, np.uint8)
        label[: shape[0] // 2] = 2  # any non-zero value is lesion
        (folder / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(label, affine), str(folder / f"labelsTr/synth_{i:05d}.nii.gz"))
        entries.append({"image": images if channels > 1 else images[0],
                        "label": f"./labelsTr/synth_{i:05d}.nii.gz", "synthetic": True})
    content = {"training": entries, "medgan": medgan if medgan is not None else {}, **dataset}
    (folder / "dataset.json").write_text(json.dumps(content), encoding="utf-8")
    return folder


@pytest.fixture
def share(tmp_path, tiny_checkpoint) -> Path:
    """A shared folder holding a generator run (``gan/``) next to its samples' folder."""
    shutil.copytree(tiny_checkpoint, tmp_path / "share" / "gan")
    return tmp_path / "share"


def recorded(share: Path, checkpoint: str, sha: str | None = "same") -> dict[str, Any]:
    folder = resolve_checkpoint(share / "gan")
    digest = checkpoint_sha256(folder) if sha == "same" else sha
    return {"checkpoint": checkpoint, "checkpoint_sha256": digest}


# ---- resolve_settings ----
def test_an_explicit_checkpoint_gives_its_config_intensity_and_hash(tmp_path,
                                                                     tiny_checkpoint) -> None:
    settings = resolve_settings(write_synthetic(tmp_path / "syn"), checkpoint=tiny_checkpoint)
    folder = resolve_checkpoint(tiny_checkpoint)
    assert settings.checkpoint == folder
    assert settings.checkpoint_sha256 == checkpoint_sha256(folder)
    assert (settings.config.modality, settings.config.spatial_dims) == ("ct", 2)
    assert settings.intensity.low == (-200.0,) and settings.intensity.high == (300.0,)
    assert settings.seed == 0


@pytest.mark.parametrize("relative", ["../gan", "../gan/checkpoints",
                                      "../gan/checkpoints/step-00000000"])
def test_a_relative_recorded_checkpoint_resolves_against_the_dataset_folder(
        share, tmp_path, monkeypatch, relative) -> None:
    synthetic = write_synthetic(share / "synthetic", medgan=recorded(share, relative))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "gan").mkdir(parents=True)  # a decoy next to the working directory
    monkeypatch.chdir(elsewhere)
    settings = resolve_settings(synthetic)
    assert settings.checkpoint.resolve() == resolve_checkpoint(share / "gan").resolve()
    assert settings.checkpoint_sha256 == checkpoint_sha256(resolve_checkpoint(share / "gan"))
    assert settings.config.modality == "ct"


def test_an_absolute_recorded_checkpoint_without_hash_is_used(share) -> None:
    synthetic = write_synthetic(share / "synthetic",
                                medgan={"checkpoint": str((share / "gan").resolve())})
    assert resolve_settings(synthetic).checkpoint == resolve_checkpoint(share / "gan")


@pytest.mark.parametrize(("medgan", "warning"), [
    pytest.param({"checkpoint": "../gan", "checkpoint_sha256": "0" * 64},
                 "checkpoint changed since sampling", id="changed hash"),
    pytest.param({"checkpoint": "../moved-away", "checkpoint_sha256": "0" * 64}, "",
                 id="checkpoint gone"),
    pytest.param({}, "", id="nothing recorded"),
])
def test_without_a_usable_checkpoint_or_config_it_asks_for_one(share, caplog, medgan,
                                                               warning) -> None:
    synthetic = write_synthetic(share / "synthetic", medgan=medgan)
    with caplog.at_level(logging.WARNING, logger="medgan.evaluation.inputs"), \
            pytest.raises(ConfigError) as err:
        resolve_settings(synthetic)
    assert str(err.value).startswith(f"{synthetic}: cannot tell how the real patches were made")
    assert "`checkpoint`" in str(err.value) and "`config`" in str(err.value)
    assert warning in caplog.text


def test_a_changed_checkpoint_is_not_used_even_with_a_config(share) -> None:
    synthetic = write_synthetic(share / "synthetic",
                                medgan=recorded(share, "../gan", sha="0" * 64))
    config = config_from_dict(config_dict("ct", 2))
    settings = resolve_settings(synthetic, config=config)
    assert settings.checkpoint is None and settings.checkpoint_sha256 is None
    assert settings.config is config and settings.intensity is None and settings.seed == 0


def test_a_config_replaces_the_recorded_checkpoint(share) -> None:
    intensity = {"modality": "ct", "low": [-100.0], "high": [100.0], "units": "HU"}
    synthetic = write_synthetic(share / "synthetic",
                                medgan={**recorded(share, "../gan"), "intensity": intensity})
    settings = resolve_settings(synthetic, config=config_from_dict(config_dict("ct", 2)))
    assert settings.checkpoint is None
    assert settings.intensity.low == (-100.0,)  # the samples' own mapping


def test_the_samples_intensity_mapping_wins_over_the_checkpoint(share) -> None:
    intensity = {"modality": "ct", "low": [-50.0], "high": [250.0], "units": "HU"}
    synthetic = write_synthetic(share / "synthetic",
                                medgan={**recorded(share, "../gan"), "intensity": intensity})
    settings = resolve_settings(synthetic)
    assert settings.checkpoint is not None
    assert (settings.intensity.low, settings.intensity.high) == ((-50.0,), (250.0,))


def test_a_config_for_another_modality_than_the_generator_is_refused(share) -> None:
    synthetic = write_synthetic(share / "synthetic")
    with pytest.raises(ConfigError, match="trained on ct but the config is for mr") as err:
        resolve_settings(synthetic, checkpoint=share / "gan",
                         config=config_from_dict(config_dict("mr", 2)))
    assert str(resolve_checkpoint(share / "gan")) in str(err.value)


@pytest.mark.parametrize(("names", "refused"), [
    ({"0": "T2w"}, True), ({"0": "PET"}, True), ({"0": "CT"}, False),
    ({"0": "something else"}, False), ({"0": "T1", "1": "CT"}, False),
])
def test_samples_of_another_modality_than_the_config_are_refused(tmp_path, names,
                                                                 refused) -> None:
    synthetic = write_synthetic(tmp_path / "syn", modality=names)
    config = config_from_dict(config_dict("ct", 2))
    if not refused:
        assert resolve_settings(synthetic, config=config).config is config
        return
    with pytest.raises(ConfigError, match="but the config is for ct") as err:
        resolve_settings(synthetic, config=config)
    assert str(synthetic / "dataset.json") in str(err.value)


@pytest.mark.parametrize(("content", "message"), [
    (None, "synthetic dataset.json not found"), (b'{"training": [', "malformed JSON"),
    (b"[1, 2]", "not a decathlon dataset.json"),
])
def test_an_unreadable_dataset_json_is_a_data_error(tmp_path, content, message) -> None:
    folder = tmp_path / "syn"
    folder.mkdir()
    if content is not None:
        (folder / "dataset.json").write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        resolve_settings(folder, checkpoint=None, config=None)
    assert str(folder / "dataset.json") in str(err.value)


# ---- read_synthetic ----
@pytest.mark.parametrize(("spatial_dims", "shape", "channels", "expected"), [
    (2, (16, 12, 1), 1, (16, 12)), (3, (8, 8, 4), 1, (8, 8, 4)), (2, (16, 16, 1), 2, (16, 16)),
])
def test_read_synthetic(tmp_path, spatial_dims, shape, channels, expected) -> None:
    info = {"checkpoint": "../gan", "seed": 7}
    folder = write_synthetic(tmp_path / "syn", [shape] * 3, medgan=info, channels=channels,
                             spacing=(0.5, 0.7, 2.0))
    syn = read_synthetic(folder, spatial_dims)
    assert syn.images.shape == (3, channels, *expected) and syn.images.dtype == np.float32
    assert syn.masks.shape == (3, *expected) and syn.masks.dtype == np.uint8
    assert set(np.unique(syn.masks)) == {0, 1}
    assert syn.spacing_mm == pytest.approx((0.5, 0.7, 2.0))
    assert syn.info == info
    assert [Path(f).name for f in syn.files] == [f"synth_{i:05d}.nii.gz" for i in range(3)]
    first = nib.load(str(folder / "imagesTr" / "synth_00000_0000.nii.gz")).get_fdata()
    assert np.allclose(syn.images[0, 0], first.reshape(expected))  # physical units, unchanged


def test_read_synthetic_refuses_a_2d_patch_with_several_slices(tmp_path) -> None:
    folder = write_synthetic(tmp_path / "syn", [(16, 16, 1), (16, 16, 3)])
    with pytest.raises(DataError, match=r"must have one slice, not shape \(16, 16, 3\)") as err:
        read_synthetic(folder, 2)
    assert "synth_00001" in str(err.value)


def test_read_synthetic_refuses_mixed_shapes(tmp_path) -> None:
    folder = write_synthetic(tmp_path / "syn", [(16, 16, 1), (32, 32, 1)])
    with pytest.raises(DataError, match="synthetic patches differ in shape") as err:
        read_synthetic(folder, 2)
    assert str(folder) in str(err.value)


# ---- check_shapes ----
def synthetic_set(shape: tuple[int, ...]) -> SyntheticSet:
    return SyntheticSet(np.zeros(shape, np.float32), np.zeros((shape[0], *shape[2:]), np.uint8),
                        (1.0, 1.0, 1.0), {}, [])


@pytest.mark.parametrize(("real", "synthetic", "ok"), [
    ((5, 1, 32, 32), (3, 1, 32, 32), True),
    ((5, 1, 32, 32), (0, 1, 32, 32), True),
    ((5, 1, 32, 32), (3, 1, 64, 64), False),
    ((5, 2, 32, 32), (3, 1, 32, 32), False),
    ((5, 1, 32, 32, 32), (3, 1, 32, 32), False),
])
def test_check_shapes(real, synthetic, ok) -> None:
    images = torch.zeros(real)
    if ok:
        check_shapes(images, synthetic_set(synthetic), "syn")
        return
    with pytest.raises(DataError) as err:
        check_shapes(images, synthetic_set(synthetic), "/data/syn")
    assert str(err.value).startswith(
        f"/data/syn: synthetic patches have shape {synthetic[1:]} but the real training "
        f"patches {real[1:]}")
