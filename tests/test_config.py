"""Validated configuration: defaults, YAML loading, overrides and error messages."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from helpers_data import config_dict

from medgan.config import (
    IntensityConfig,
    MedganConfig,
    config_from_dict,
    load_config,
    save_config,
)
from medgan.errors import ConfigError, MedganError


def write(tmp_path, content, name="cfg.yaml"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_minimal_config_gets_the_documented_defaults():
    config = config_from_dict({"modality": "ct"})
    assert config.spatial_dims == 2
    assert config.data.patch_size == 64
    assert config.data.lesion_labels == [1]
    assert config.data.spacing_mm is None
    assert config.intensity.hu_window == (-200.0, 300.0)
    assert config.intensity.percentiles == (0.5, 99.9)
    assert config.intensity.suv_max == 10.0
    assert config.model.kind == "dcgan"
    assert config.model.d_norm == "batch"
    assert config.train.loss == "bce"


def test_every_field_is_described():
    for model in (MedganConfig, IntensityConfig):
        for name, field in model.model_fields.items():
            if name not in ("intensity", "data", "model", "train"):
                assert field.description, f"{model.__name__}.{name}"


def test_load_config_reads_yaml(tmp_path, make_config):
    config = load_config(make_config("pet", 3))
    assert config.modality == "pet"
    assert config.spatial_dims == 3
    assert config.data.patch_size == 32


def test_lesion_labels_are_sorted_and_deduplicated():
    config = config_from_dict({"modality": "mr", "data": {"lesion_labels": [4, 1, 2, 4, 3]}})
    assert config.data.lesion_labels == [1, 2, 3, 4]


def test_overrides_use_dotted_keys(make_config):
    config = load_config(make_config(), {"train.steps": 7, "data.patch_size": 64,
                                         "intensity.hu_window": [-100, 100], "name": "x"})
    assert config.train.steps == 7
    assert config.data.patch_size == 64
    assert config.intensity.hu_window == (-100.0, 100.0)
    assert config.name == "x"


def test_overrides_create_missing_sections(tmp_path):
    config = load_config(write(tmp_path, {"modality": "ct"}), {"model.ngf": 16})
    assert config.model.ngf == 16


def test_override_below_a_value_is_a_config_error(make_config):
    with pytest.raises(ConfigError,
                       match=r"^overrides: cannot set 'train.steps.x': 'steps' is a value"):
        load_config(make_config(), {"train.steps.x": 1})


def test_overrides_are_validated(make_config):
    with pytest.raises(ConfigError, match=r"train.steps: Input should be greater than 0"):
        load_config(make_config(), {"train.steps": 0})


def test_to_dict_is_json_and_save_config_round_trips(tmp_path):
    config = config_from_dict({**config_dict(spacing_mm=(1, 1, 0)), "name": "rt"})
    config.data.cache_dir = tmp_path / "cache"
    as_dict = config.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["data"]["spacing_mm"] == [1.0, 1.0, 0.0]
    assert as_dict["data"]["cache_dir"] == str(tmp_path / "cache")
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_assignment_is_validated():
    config = config_from_dict({"modality": "ct"})
    with pytest.raises(ValueError, match="greater than 0"):
        config.train.steps = -1


def test_config_errors_are_medgan_errors_with_exit_code_2():
    assert issubclass(ConfigError, MedganError)
    assert ConfigError.exit_code == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modality": None}, r"modality: must be 'ct', 'mr', 'pet' or 'none', not None"),
        ({"modality": "xray"}, r"modality: must be 'ct', 'mr', 'pet' or 'none', not 'xray'"),
        ({"spatial_dims": 4}, r"spatial_dims: must be 2 or 3, not 4"),
        ({"data": {"patch_size": -4}}, r"data.patch_size must be one of 32, 64, 128 for "
                                       r"spatial_dims=2, not -4"),
        ({"data": {"patch_size": 48}}, r"data.patch_size must be one of 32, 64, 128 .* not 48"),
        ({"spatial_dims": 3, "data": {"patch_size": 128}},
         r"data.patch_size must be one of 32, 64 for spatial_dims=3, not 128"),
        ({"data": {"patch_size": "big"}}, r"data.patch_size: Input should be a valid integer"),
        ({"intensity": {"percentiles": [99.5, 0.5]}},
         r"intensity.percentiles: percentiles must satisfy 0 <= low < high <= 100, "
         r"not \[99.5, 0.5\]"),
        ({"intensity": {"percentiles": [0, 101]}}, r"intensity.percentiles: percentiles must"),
        ({"intensity": {"hu_window": [300, -200]}},
         r"intensity.hu_window: low must be below high, not \[300.0, -200.0\]"),
        ({"intensity": {"suv_max": 0}}, r"intensity.suv_max: Input should be greater than 0"),
        ({"train": {"loss": "wgan-gp"}},
         r"model.d_norm must be 'none' or 'instance' with train.loss 'wgan-gp', not 'batch'"),
        ({"train": {"loss": "lsgan"}}, r"train.loss: must be 'bce', 'hinge' or 'wgan-gp', not "
                                       r"'lsgan'"),
        ({"bogus": 1}, r"bogus: unknown option \(check the spelling"),
        ({"data": {"pach_size": 64}}, r"data.pach_size: unknown option; did you mean "
                                      r"data.patch_size\?"),
        ({"data": {"spacing_mm": [-1, 1, 1]}},
         r"data.spacing_mm: spacing values must be >= 0 mm \(0 = keep\), not \[-1.0, 1.0, 1.0\]"),
        ({"data": {"spacing_mm": [0, 0, 0]}}, r"data.spacing_mm: spacing values must be >= 0"),
        ({"data": {"lesion_labels": [0, 1]}},
         r"data.lesion_labels: lesion label values must be positive integers, not \[0, 1\]"),
        ({"data": {"lesion_labels": []}}, r"data.lesion_labels: List should have at least 1"),
        ({"data": {"lesion_free_fraction": 1.0}}, r"data.lesion_free_fraction: Input should be "
                                                  r"less than 1"),
        ({"train": {"betas": [0.5, 1.0]}}, r"train: betas must lie in \[0, 1\), not"),
        ({"train": {"ema_decay": 1.5}}, r"train: ema_decay must be in \(0, 1\) or null"),
        ({"train": {"diffaugment": ["rotate"]}},
         r"train.diffaugment.0: must be 'translation', 'cutout', 'brightness' or 'contrast', "
         r"not 'rotate'"),
        ({"data": [1]}, r"data: Input should be a valid dictionary"),
    ],
    ids=lambda v: None if isinstance(v, str) else json.dumps(v)[:40],
)
def test_invalid_values_name_the_file_and_the_field(tmp_path, change, message):
    raw = config_dict()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*{message}") as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_several_problems_are_counted(tmp_path):
    path = write(tmp_path, {"modality": "ct", "data": {"lesion_free_fraction": 2,
                                                       "min_lesion_voxels": 0}})
    with pytest.raises(ConfigError, match=r"\(and 1 more problem\(s\)\)"):
        load_config(path)


def test_missing_modality_is_required(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml: modality: is required"):
        load_config(write(tmp_path, {"spatial_dims": 2}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "config file is empty"),
        ("# only a comment\n", "config file is empty"),
        ("modality: ct\ndata: [unclosed\n", r"not valid YAML \(.*, line 3\)"),
        ("modality: ct\n\tdata: 1\n", r"not valid YAML \(.*, line 2\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", r"not valid YAML \("),
        ("- a\n- b\n", "must be a mapping of options, not list"),
        ("just text", "must be a mapping of options, not str"),
    ],
    ids=["empty", "comment-only", "unclosed", "tab", "binary", "list", "scalar"],
)
def test_unreadable_config_files(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config(tmp_path)  # a folder is not a config file


def test_config_from_dict_refuses_non_mappings():
    with pytest.raises(ConfigError, match=r"^cli: must be a mapping of options, not list"):
        config_from_dict([1], source="cli")


def test_an_override_typo_names_the_overrides_and_the_nearest_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modality: ct\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"model.ngff": 32})
    assert info.value.param == "overrides"
    assert str(info.value) == "overrides: model.ngff: unknown option; did you mean model.ngf?"
    assert str(path) not in str(info.value)  # the YAML file is not blamed
    with pytest.raises(ConfigError, match=r"^overrides: trian: unknown option; did you mean "
                                          r"train\?"):
        load_config(path, {"trian.steps": 3})


def test_apply_overrides_makes_sections_and_refuses_a_value_as_section():
    from medgan.config import apply_overrides

    data = {"modality": "ct", "train": {"steps": 5}}
    assert apply_overrides(data, {"train.batch_size": 4, "model.ngf": 8}) == {
        "modality": "ct", "train": {"steps": 5, "batch_size": 4}, "model": {"ngf": 8}}
    assert data == {"modality": "ct", "train": {"steps": 5}}  # the input is not changed
    with pytest.raises(ConfigError, match="'modality' is a value, not a section"):
        apply_overrides(data, {"modality.x": 1})
