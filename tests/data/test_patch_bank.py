"""The patch bank and its on-disk cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers_data import DICOM_PATIENT, config_dict, write_dicom_series, write_nifti

import medgan.data.patch_bank as patch_bank
from medgan.config import config_from_dict
from medgan.data import PatchBank, build_patch_bank, load_datalist
from medgan.data.patch_bank import data_fingerprint
from medgan.errors import DataError


def cfg(modality="ct", spatial_dims=2, intensity=None, **data):
    raw = config_dict(modality, spatial_dims, **data)
    if intensity:
        raw["intensity"] = intensity
    return config_from_dict(raw)


@pytest.fixture
def cases(make_dataset):
    return load_datalist(make_dataset(n=2))


@pytest.fixture
def count_loads(monkeypatch):
    """Counts calls of ``load_case`` (= decoded cases) during bank building."""
    calls: list[str] = []
    real = patch_bank.load_case

    def counting(case, config):
        calls.append(case["case_id"])
        return real(case, config)

    monkeypatch.setattr(patch_bank, "load_case", counting)
    return calls


def forbid_decoding(monkeypatch):
    def fail(case, config):
        raise AssertionError(f"{case['case_id']} was decoded despite a valid cache")

    monkeypatch.setattr(patch_bank, "load_case", fail)


def build(cases, config, cache_dir=None, **kwargs):
    return build_patch_bank(cases, config, cache_dir=cache_dir, progress=False, **kwargs)


def test_bank_contents_2d(make_dataset):
    cases = load_datalist(make_dataset(n=2, shape=(96, 96, 12)))
    bank = build(cases, cfg(lesion_free_fraction=0.2))
    n = len(bank)
    assert n > 0
    assert tuple(bank.images.shape) == (n, 1, 32, 32)
    assert tuple(bank.masks.shape) == (n, 1, 32, 32)
    assert bank.spatial_dims == 2
    assert bank.image_channels == 1
    assert bank.case_ids == ["case_000", "case_001"]
    assert set(bank.case_index.tolist()) == {0, 1}
    assert bank.has_lesion.sum() < n  # some lesion-free patches
    assert bank.intensity.low == (-200.0,)
    assert bank.spacing_mm == (1.0, 1.0, 1.0)
    assert len(bank.fingerprint) == 64
    pairs = bank.pairs()
    assert tuple(pairs.shape) == (n, 2, 32, 32)
    assert set(torch.unique(pairs[:, 1]).tolist()) <= {-1.0, 1.0}


def test_bank_contents_3d_multichannel(make_dataset):
    cases = load_datalist(make_dataset(n=2, modality="mr", channels=2, shape=(32, 32, 32)))
    bank = build(cases, cfg("mr", 3, patches_per_case=3))
    assert tuple(bank.images.shape) == (6, 2, 32, 32, 32)
    assert bank.spatial_dims == 3
    assert len(bank.intensity.low) == 2
    assert len(bank.case_mappings) == 2


def test_second_build_is_a_cache_hit_without_decoding(cases, tmp_path, monkeypatch):
    first = build(cases, cfg(), tmp_path / "cache")
    files = list((tmp_path / "cache").glob("patches-*.safetensors"))
    assert len(files) == 1
    forbid_decoding(monkeypatch)
    second = build(cases, cfg(), tmp_path / "cache")
    torch.testing.assert_close(second.images, first.images)
    torch.testing.assert_close(second.masks, first.masks)
    assert second.metadata() == first.metadata()


def test_changing_a_file_invalidates_the_cache(cases, tmp_path, count_loads):
    build(cases, cfg(), tmp_path / "cache")
    label = cases[1]["label"]
    data = np.asanyarray(nib.load(label).dataobj).copy()
    data[data > 0] = 0
    data[20:30, 20:30, 3:8] = 1  # a different lesion
    img = nib.load(label)
    write_nifti(tmp_path / "new.nii.gz", data, img.affine)
    os.replace(tmp_path / "new.nii.gz", label)
    count_loads.clear()
    bank = build(cases, cfg(), tmp_path / "cache")
    assert count_loads == ["case_000", "case_001"]
    assert len(list((tmp_path / "cache").glob("patches-*.safetensors"))) == 2
    assert bank.fingerprint != data_fingerprint([cases[0]])


def test_touching_a_file_invalidates_the_cache(cases, tmp_path, count_loads):
    build(cases, cfg(), tmp_path / "cache")
    stat = os.stat(cases[0]["image"])
    os.utime(cases[0]["image"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    count_loads.clear()
    build(cases, cfg(), tmp_path / "cache")
    assert count_loads == ["case_000", "case_001"]


@pytest.mark.parametrize(
    ("change", "rebuilds"),
    [
        ({"data": {"patch_size": 64}}, True),
        ({"data": {"lesion_free_fraction": 0.3}}, True),
        ({"data": {"spacing_mm": (2.0, 2.0, 0.0)}}, True),
        ({"data": {"lesion_labels": [1, 2]}}, True),
        ({"intensity": {"hu_window": (-1000.0, 1000.0)}}, True),
        ({"seed": 1}, True),
        ({"train": {"steps": 500, "lr_g": 1e-3}}, False),
        ({"model": {"ngf": 16}}, False),
        ({"data": {"cache_dir": "/somewhere/else"}}, False),
    ],
    ids=["patch-size", "free-fraction", "spacing", "labels", "window", "seed", "train", "model",
         "cache-dir"],
)
def test_settings_that_change_patches_invalidate_the_cache(cases, tmp_path, count_loads,
                                                           change, rebuilds):
    build(cases, cfg(), tmp_path / "cache")
    raw = config_dict()
    for section in ("data", "train", "model"):
        raw[section].update(change.get(section, {}))
    raw["intensity"] = change.get("intensity", {})
    count_loads.clear()
    build(cases, config_from_dict(raw), tmp_path / "cache", seed=change.get("seed", 0))
    assert bool(count_loads) is rebuilds


def test_unreadable_cache_is_rebuilt(cases, tmp_path, count_loads):
    build(cases, cfg(), tmp_path / "cache")
    [path] = (tmp_path / "cache").glob("patches-*.safetensors")
    path.write_bytes(b"garbage")
    count_loads.clear()
    bank = build(cases, cfg(), tmp_path / "cache")
    assert count_loads
    assert len(PatchBank.load(path)) == len(bank)


def test_fingerprint_is_stable_across_folders(make_dataset, tmp_path):
    path = make_dataset(n=2)
    copy = shutil.copytree(path.parent, tmp_path / "copied" / "elsewhere")
    here, there = load_datalist(path), load_datalist(copy / "dataset.json")
    assert here[0]["image"] != there[0]["image"]
    assert data_fingerprint(here) == data_fingerprint(there)
    assert build(here, cfg()).fingerprint == build(there, cfg()).fingerprint
    assert data_fingerprint(here) != data_fingerprint(here[:1])


def test_save_and_load_round_trip(cases, tmp_path):
    bank = build(cases, cfg(lesion_free_fraction=0.2))
    bank.save(tmp_path / "bank.safetensors")
    loaded = PatchBank.load(tmp_path / "bank.safetensors")
    for name in ("images", "masks", "has_lesion", "case_index"):
        torch.testing.assert_close(getattr(loaded, name), getattr(bank, name))
    assert loaded.metadata() == bank.metadata()
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_bad_case_raises_naming_the_file(cases):
    with open(cases[1]["image"], "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))
    with pytest.raises(DataError, match=r"case_001.nii.gz: cannot be read"):
        build(cases, cfg())


def test_failed_build_writes_nothing(cases, tmp_path):
    with open(cases[1]["image"], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(DataError):
        build(cases, cfg(), tmp_path / "run" / "cache")
    assert not (tmp_path / "run").exists()


def test_skip_bad_reports_and_skips(cases):
    with open(cases[0]["image"], "wb") as f:
        f.write(b"not an image")
    bank = build(cases, cfg(), skip_bad=True)
    assert bank.case_ids == ["case_001"]
    assert set(bank.case_index.tolist()) == {0}
    assert len(bank.skipped) == 1
    assert "case_000.nii.gz: cannot be read" in bank.skipped[0]
    assert bank.fingerprint == data_fingerprint(cases[1:])


def test_case_without_lesion_is_skipped(cases):
    label = nib.load(cases[0]["label"])
    write_nifti(Path(cases[0]["label"]), np.zeros(label.shape, np.uint8),
                label.affine)
    bank = build(cases, cfg())
    assert bank.case_ids == ["case_001"]
    assert "case_000.nii.gz: no lesion patch" in bank.skipped[0]


def test_no_lesion_anywhere_is_an_error(cases):
    with pytest.raises(DataError, match="no training patches could be extracted.*"
                                        "min_lesion_voxels=5 voxels per slice; first problem: "
                                        ".*case_000.nii.gz: no lesion patch"):
        build(cases, cfg(lesion_labels=[7]))


@pytest.mark.parametrize("skip_bad", [False, True])
def test_scan_much_smaller_than_the_patch_is_refused(make_dataset, skip_bad):
    cases = load_datalist(make_dataset(n=1, shape=(8, 8, 4), lesion_radius_mm=2.5,
                                       lesion_center=(4, 4, 2)))
    with pytest.raises(DataError, match=r"case_000.nii.gz: scan is 8 x 8 voxels at the target "
                                        r"spacing, smaller than half of data.patch_size=64"):
        build(cases, cfg(patch_size=64, min_lesion_voxels=1), skip_bad=skip_bad)


def test_dicom_identifiers_never_reach_the_cache(make_phantom, tmp_path):
    phantom = make_phantom(image_dtype=np.int16)
    volume = np.asanyarray(nib.load(phantom.image).dataobj)
    series = write_dicom_series(tmp_path / "pat" / "image", volume, phantom.affine)
    case = {**phantom.case, "image": str(series)}
    build([case], cfg(), tmp_path / "cache")
    [path] = (tmp_path / "cache").glob("patches-*.safetensors")
    content = path.read_bytes()
    for value in DICOM_PATIENT.values():
        assert value.encode() not in content
