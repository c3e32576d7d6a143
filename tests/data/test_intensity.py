"""Per-modality mapping to [-1, 1] and its exact inverse back to physical units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_data import config_dict, phantom_arrays
from hypothesis import given, settings
from hypothesis import strategies as st

from medgan.config import IntensityConfig, config_from_dict
from medgan.data import IntensityMapping, NormalizeModality, NormalizeModalityd, load_case
from medgan.data.intensity import MAPPING_META_KEY, fit_mapping
from medgan.errors import DataError

RTOL = 1e-3


def assert_round_trip(values: np.ndarray, mapping: IntensityMapping) -> None:
    """``inverse(forward(x)) == x`` within 1e-3 relative for every value inside the window.

    A tiny absolute floor (1e-5 of the window width) covers values near zero, where float32
    model-space precision rather than the mapping limits the error.
    """
    back = np.asarray(mapping.inverse(mapping.forward(values)))
    for c in range(values.shape[0]):
        lo, hi = mapping.low[c], mapping.high[c]
        inside = (values[c] >= lo) & (values[c] <= hi)
        assert inside.any()
        np.testing.assert_allclose(back[c][inside], values[c][inside], rtol=RTOL,
                                   atol=1e-5 * (hi - lo))
        np.testing.assert_allclose(back[c][~inside], np.clip(values[c][~inside], lo, hi),
                                   rtol=RTOL, atol=1e-5 * (hi - lo))


@pytest.mark.parametrize(
    ("modality", "channels", "intensity"),
    [
        ("ct", 1, {"hu_window": (-1000.0, 1000.0)}),
        ("ct", 1, {}),
        ("mr", 1, {}),
        ("mr", 3, {"percentiles": (1.0, 99.0)}),
        ("pet", 1, {"suv_max": 15.0}),
        ("pet", 2, {}),
    ],
    ids=["ct-wide", "ct-soft-tissue", "mr", "mr-3ch", "pet", "pet-2ch"],
)
def test_phantom_round_trips_to_physical_units(modality, channels, intensity):
    image, _, _ = phantom_arrays(modality=modality, channels=channels)
    image = image if channels > 1 else image[None]
    mapping = fit_mapping(image, modality, IntensityConfig(**intensity))
    assert len(mapping.low) == len(mapping.high) == channels
    model = np.asarray(mapping.forward(image))
    assert model.dtype == np.float32
    assert model.min() >= -1.0
    assert model.max() <= 1.0
    assert_round_trip(image, mapping)


@pytest.mark.parametrize(
    ("modality", "channels"), [("ct", 1), ("mr", 1), ("mr", 2), ("pet", 1)]
)
def test_load_case_output_inverts_to_the_written_values(make_phantom, modality, channels):
    """Through the whole MONAI chain: file -> [-1, 1] -> physical units of the file."""
    phantom = make_phantom(modality=modality, channels=channels)
    config = config_from_dict({**config_dict(modality), "intensity": {"suv_max": 15.0}})
    out = load_case(phantom.case, config)
    mapping = IntensityMapping.from_dict(out[MAPPING_META_KEY])
    written = phantom.image_array if channels > 1 else phantom.image_array[None]
    back = mapping.inverse(out["image"].as_tensor()).numpy()
    for c in range(channels):
        lo, hi = mapping.low[c], mapping.high[c]
        inside = (written[c] >= lo) & (written[c] <= hi)
        np.testing.assert_allclose(back[c][inside], written[c][inside], rtol=RTOL,
                                   atol=1e-5 * (hi - lo))


def test_ct_uses_the_fixed_hounsfield_window():
    image = np.array([[[[-1000.0, -200.0, 50.0, 300.0, 2000.0]]]], dtype=np.float32)
    mapping = fit_mapping(image, "ct", IntensityConfig(hu_window=(-200.0, 300.0)))
    assert mapping.low == (-200.0,)
    assert mapping.high == (300.0,)
    assert mapping.units == "HU"
    np.testing.assert_allclose(mapping.forward(image).ravel(), [-1.0, -1.0, 0.0, 1.0, 1.0],
                               atol=1e-6)


def test_mr_percentiles_ignore_the_zero_background():
    image, _, _ = phantom_arrays(modality="mr")
    cfg = IntensityConfig(percentiles=(0.5, 99.5))
    mapping = fit_mapping(image[None], "mr", cfg)
    foreground = image[image != 0]
    assert mapping.low[0] == pytest.approx(np.percentile(foreground, 0.5), rel=1e-6)
    assert mapping.high[0] == pytest.approx(np.percentile(foreground, 99.5), rel=1e-6)
    everything = fit_mapping(image[None], "mr", cfg.model_copy(update={"foreground": "all"}))
    assert everything.low[0] == 0.0
    assert mapping.units == "a.u."


def test_mr_channels_get_their_own_percentiles():
    image, _, _ = phantom_arrays(modality="mr", channels=2)
    mapping = fit_mapping(image, "mr", IntensityConfig())
    assert mapping.high[1] > mapping.high[0]  # the second channel is 25 % brighter


def test_pet_maps_zero_to_suv_max():
    image = np.array([[[[0.0, 5.0, 10.0, 30.0]]]], dtype=np.float32)
    mapping = fit_mapping(image, "pet", IntensityConfig(suv_max=10.0))
    assert (mapping.low, mapping.high, mapping.units) == ((0.0,), (10.0,), "SUV")
    np.testing.assert_allclose(mapping.forward(image).ravel(), [-1.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_none_uses_the_configured_value_range():
    mapping = fit_mapping(np.zeros((1, 2, 2, 2)), "none", IntensityConfig(value_range=(-5, 5)))
    assert (mapping.low, mapping.high) == ((-5.0,), (5.0,))


def test_mr_without_spread_is_a_data_error():
    image = np.zeros((1, 8, 8, 4), dtype=np.float32)
    image[0, 2:6, 2:6] = 300.0
    with pytest.raises(DataError, match=r"scan.nii.gz: channel 0 has no intensity spread"):
        fit_mapping(image, "mr", IntensityConfig(), source="scan.nii.gz")


def test_unknown_modality_is_a_data_error():
    with pytest.raises(DataError, match="modality must be ct, mr, pet or none, not 'xray'"):
        fit_mapping(np.zeros((1, 2, 2, 2)), "xray", IntensityConfig())


def test_forward_and_inverse_keep_the_array_type():
    mapping = IntensityMapping("ct", (-200.0,), (300.0,))
    t = torch.linspace(-300, 400, 20).reshape(1, 4, 5)
    assert isinstance(mapping.forward(t), torch.Tensor)
    assert isinstance(mapping.inverse(mapping.forward(t)), torch.Tensor)
    assert isinstance(mapping.forward(t.numpy()), np.ndarray)


def test_mapping_serialises_and_combines_by_median():
    a = IntensityMapping("mr", (10.0, 1.0), (100.0, 50.0))
    assert IntensityMapping.from_dict(a.to_dict()) == a
    assert a.to_dict()["units"] == "a.u."
    b = IntensityMapping("mr", (20.0, 3.0), (300.0, 70.0))
    c = IntensityMapping("mr", (30.0, 2.0), (200.0, 60.0))
    assert IntensityMapping.combine([a, b, c]) == IntensityMapping(
        "mr", (20.0, 2.0), (200.0, 60.0)
    )
    with pytest.raises(DataError, match="no cases"):
        IntensityMapping.combine([])


def test_normalize_transforms_record_the_mapping():
    image = torch.as_tensor(phantom_arrays(modality="pet")[0][None])
    out, mapping = NormalizeModality("pet", IntensityConfig(suv_max=15.0))(image)
    assert mapping.high == (15.0,)
    d = NormalizeModalityd("image", "pet", IntensityConfig(suv_max=15.0))({"image": image})
    torch.testing.assert_close(d["image"], out)
    assert d[MAPPING_META_KEY] == mapping.to_dict()


# ---- properties: any window, any values inside it -----------------------------------------

finite = st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def windows(draw):
    """(low, high) with a width that float32 can resolve (>= 1e-3 of the magnitude)."""
    low = draw(finite)
    width = draw(st.floats(1e-3 * max(1.0, abs(low)), 1e5, allow_nan=False))
    return low, low + width


@settings(max_examples=200, deadline=None)
@given(window=windows(), fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_round_trip_property(window, fractions):
    low, high = window
    values = np.asarray([low + f * (high - low) for f in fractions], dtype=np.float64)[None]
    mapping = IntensityMapping("none", (low,), (high,))
    model = np.asarray(mapping.forward(values))
    assert np.all(model >= -1.0)
    assert np.all(model <= 1.0)
    back = np.asarray(mapping.inverse(model), dtype=np.float64)
    np.testing.assert_allclose(back, values, rtol=0, atol=RTOL * (high - low))


@settings(max_examples=100, deadline=None)
@given(window=windows(), values=st.lists(finite, min_size=1, max_size=50))
def test_forward_clips_and_is_monotonic(window, values):
    low, high = window
    x = np.sort(np.asarray(values, dtype=np.float32))[None]
    model = np.asarray(IntensityMapping("none", (low,), (high,)).forward(x))
    assert model.min() >= -1.0
    assert model.max() <= 1.0
    assert np.all(np.diff(model[0]) >= -1e-6)
