"""Every example config in configs/ validates and says what it is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgan.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_examples_exist():
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "ct_lesion_2d.yaml", "mr_flair_2d.yaml", "mr_flair_3d.yaml",
            "pet_lesion_2d.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    config = load_config(path)
    assert config.name != "medgan", "give every example its own run name"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_starts_with_a_comment(path):
    assert path.read_text(encoding="utf-8").startswith("# ")


def test_run_names_are_unique():
    names = [load_config(p).name for p in CONFIGS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ct_lesion_2d.yaml", {"modality": "ct", "spatial_dims": 2}),
        ("mr_flair_2d.yaml", {"modality": "mr", "spatial_dims": 2, "patch_size": 64,
                              "lesion_labels": [1, 2, 3, 4], "spacing_mm": (1.0, 1.0, 1.0)}),
        ("mr_flair_3d.yaml", {"modality": "mr", "spatial_dims": 3,
                              "lesion_labels": [1, 2, 3, 4]}),
        ("pet_lesion_2d.yaml", {"modality": "pet", "spatial_dims": 2}),
    ],
)
def test_example_settings(name, expected):
    config = load_config(CONFIG_DIR / name)
    assert config.modality == expected["modality"]
    assert config.spatial_dims == expected["spatial_dims"]
    for key in ("patch_size", "lesion_labels", "spacing_mm"):
        if key in expected:
            assert getattr(config.data, key) == expected[key]
    # sized for a GPU run, unlike the CPU quick start
    assert config.train.batch_size >= 32
    assert config.train.steps >= 2000
    assert config.model.ngf == config.model.ndf == 64


def test_pet_example_uses_a_plausible_suv_range():
    config = load_config(CONFIG_DIR / "pet_lesion_2d.yaml")
    assert 5.0 <= config.intensity.suv_max <= 25.0
    assert config.data.spacing_mm[0] >= 2.0


def test_lidc_example_maps_the_stored_8bit_window():
    config = load_config(CONFIG_DIR / "lidc_nodules_2d.yaml")
    assert config.modality == "none" and config.spatial_dims == 2
    assert tuple(config.intensity.value_range) == (0.0, 255.0)
