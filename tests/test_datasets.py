"""The bundled sarcoma sample: datalists load, files agree, values are plausible, size is small."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan.datasets import (
    BUNDLED_MODALITIES,
    bundled_data_dir,
    bundled_datalist,
    bundled_datalist_path,
)
from medgan.errors import ConfigError

SIZE_LIMIT_BYTES = 15_000_000
CASES = ["STS_001", "STS_002", "STS_003"]
#: Physical range each modality's intensities must fall in (HU for CT, SUV for PET).
VALUE_RANGES = {"ct": (-1024.0, 3100.0), "mr": (0.0, np.inf), "pet": (0.0, np.inf)}
#: On-disk dtype of the images (masks are always uint8).
IMAGE_DTYPES = {"ct": np.int16, "mr": np.int16, "pet": np.float32}


def _pairs():
    return [
        pytest.param(modality, item, id=f"{modality}-{index}")
        for modality in BUNDLED_MODALITIES
        for index, item in enumerate(bundled_datalist(modality))
    ]


@pytest.mark.parametrize("modality", BUNDLED_MODALITIES)
def test_datalist_lists_every_case_with_existing_absolute_paths(modality):
    folder = bundled_data_dir() / modality
    items = bundled_datalist(modality)
    assert items == [
        {
            "image": str(folder / "imagesTr" / f"{case}.nii.gz"),
            "label": str(folder / "labelsTr" / f"{case}.nii.gz"),
        }
        for case in CASES
    ]
    for item in items:
        assert Path(item["image"]).is_absolute()
        assert Path(item["image"]).is_file()
        assert Path(item["label"]).is_file()


@pytest.mark.parametrize("modality", BUNDLED_MODALITIES)
def test_datalist_json_is_decathlon_style(modality):
    content = json.loads(bundled_datalist_path(modality).read_text())
    assert content["labels"] == {"0": "background", "1": "tumour"}
    assert content["numTraining"] == len(content["training"]) == len(CASES)
    assert "CC BY 3.0" in content["licence"]
    assert "10.7937/K9/TCIA.2015.7GO2GSKS" in content["reference"]


@pytest.mark.parametrize(("modality", "item"), _pairs())
def test_image_and_label_share_their_grid(modality, item):
    image, label = nib.load(item["image"]), nib.load(item["label"])
    assert image.ndim == 3
    assert image.shape == label.shape
    np.testing.assert_allclose(image.affine, label.affine, atol=1e-5)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(label.affine)


@pytest.mark.parametrize(("modality", "item"), _pairs())
def test_label_is_a_binary_non_empty_tumour_mask(modality, item):
    label = nib.load(item["label"])
    assert label.get_data_dtype() == np.uint8
    values = np.asanyarray(label.dataobj)
    assert set(np.unique(values).tolist()) == {0, 1}
    assert values.sum() > 100


@pytest.mark.parametrize(("modality", "item"), _pairs())
def test_image_values_are_plausible_for_the_modality(modality, item):
    image = nib.load(item["image"])
    assert image.get_data_dtype() == IMAGE_DTYPES[modality]
    values = np.asanyarray(image.dataobj)
    low, high = VALUE_RANGES[modality]
    assert np.isfinite(values).all()
    assert values.min() >= low
    assert values.max() <= high
    assert values.max() > values.min()


@pytest.mark.parametrize(("modality", "item"), _pairs())
def test_tumour_has_in_plane_context_around_it(modality, item):
    """The crop keeps at least ~2 cm of tissue on each in-plane side of the tumour."""
    label = nib.load(item["label"])
    mask = np.asanyarray(label.dataobj)
    zooms = label.header.get_zooms()
    for axis in (0, 1):
        coords = np.nonzero(mask)[axis]
        margin_voxels = min(coords.min(), mask.shape[axis] - 1 - coords.max())
        assert margin_voxels * zooms[axis] >= 20.0


def test_sample_folder_is_small():
    folder = bundled_data_dir().parent
    total = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert total <= SIZE_LIMIT_BYTES


def test_attribution_is_shipped_next_to_the_data():
    text = (bundled_data_dir().parent / "ATTRIBUTION.md").read_text()
    assert "CC BY 3.0" in text
    assert "10.7937/K9/TCIA.2015.7GO2GSKS" in text


@pytest.mark.parametrize("function", [bundled_datalist, bundled_datalist_path])
def test_unknown_modality_raises_config_error(function):
    with pytest.raises(ConfigError, match="must be one of 'ct', 'mr', 'pet', not 'xray'"):
        function("xray")


def test_old_names_still_work_with_a_deprecation_warning():
    from medgan import datasets

    with pytest.warns(DeprecationWarning, match="bundled_datalist"):
        items = datasets.sample_datalist("ct")
    assert items == bundled_datalist("ct")
    with pytest.warns(DeprecationWarning, match="bundled_datalist_path"):
        assert datasets.sample_datalist_path("mr") == bundled_datalist_path("mr")
