"""medgan.checkpoint.metadata: the model description in a sidecar, format 1 of medgan 0.1 too."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from helpers_data import config_dict

from medgan.checkpoint.metadata import (
    REQUIRED_KEYS,
    CheckpointSpec,
    build_metadata,
    read_spec,
    upgrade,
)
from medgan.config import config_from_dict
from medgan.errors import CheckpointError, ConfigError

V01_SIDECAR = (Path(__file__).resolve().parents[1] / "data_files" / "checkpoint_v01"
               / "checkpoints" / "step-00000000" / "checkpoint.json")
DUPLICATED = ("modality", "spatial_dims", "patch_size", "latent_dim")
CASES = [{"id": "case_001", "files": {"case_001.nii.gz": "a" * 64}},
         {"id": 7, "files": {"7.nii.gz": "c" * 64}}]
INTENSITY = {"modality": "ct", "low": [-200.0], "high": [300.0], "units": "HU"}


def metadata(modality: str = "ct", spatial_dims: int = 2, **kwargs: Any) -> dict[str, Any]:
    config = config_from_dict(config_dict(modality, spatial_dims, lesion_labels=[1, 2]))
    args = {"image_channels": 1, "spacing_mm": (0.8, 0.8, 2), "intensity": INTENSITY,
            "training_cases": CASES, "seed": 5, **kwargs}
    return build_metadata(config, **args)


def v01() -> dict[str, Any]:
    """The sidecar medgan 0.1 wrote for the committed test checkpoint."""
    return json.loads(V01_SIDECAR.read_text(encoding="utf-8"))


# ---- build_metadata ----
@pytest.mark.parametrize(("modality", "spatial_dims"), [("ct", 2), ("mr", 3), ("pet", 2)])
def test_build_metadata_keeps_config_facts_in_config_only(modality, spatial_dims) -> None:
    meta = metadata(modality, spatial_dims)
    assert not set(DUPLICATED) & set(meta)
    assert meta["config"]["modality"] == modality
    assert meta["config"]["spatial_dims"] == spatial_dims
    assert meta["config"]["data"]["patch_size"] == 32
    assert meta["config"]["model"]["latent_dim"] == 8
    assert set(REQUIRED_KEYS) <= set(meta)
    assert json.loads(json.dumps(meta)) == meta  # plain JSON, as the sidecar stores it


def test_build_metadata_records_the_training_cases_and_counts() -> None:
    meta = metadata(n_patches=40, n_lesion_patches=30, world_size=2, data_source=Path("/d/x"),
                    data_fingerprint="f" * 64)
    assert meta["training_cases"] == CASES and meta["n_cases"] == 2
    assert meta["spacing_mm"] == [0.8, 0.8, 2.0]
    assert all(isinstance(s, float) for s in meta["spacing_mm"])
    assert meta["lesion_labels"] == [1, 2] and meta["seed"] == 5
    assert (meta["n_patches"], meta["n_lesion_patches"], meta["world_size"]) == (40, 30, 2)
    assert meta["data_source"] == "/d/x" and meta["data_fingerprint"] == "f" * 64


def test_built_metadata_reads_back_as_a_spec() -> None:
    spec = read_spec(metadata("mr", 3), "built")
    assert (spec.kind, spec.modality, spec.spatial_dims, spec.patch_size, spec.latent_dim) == (
        "dcgan", "mr", 3, 32, 8)
    assert spec.training_case_ids == ["case_001", "7"]


# ---- upgrade ----
def test_upgrade_of_format_1_drops_the_duplicates() -> None:
    old = v01()
    assert old["format_version"] == 1 and set(DUPLICATED) <= set(old)
    new = upgrade(old, V01_SIDECAR)
    assert not set(DUPLICATED) & set(new)
    assert new["training_cases"] is None  # not recorded by medgan 0.1
    assert {k: v for k, v in new.items() if k != "training_cases"} == {
        k: v for k, v in old.items() if k not in DUPLICATED}
    assert old == v01(), "upgrade changed its input"


def test_upgrade_of_format_1_without_duplicates_or_with_cases() -> None:
    old = {k: v for k, v in v01().items() if k not in ("modality", "latent_dim")}
    old["training_cases"] = CASES
    new = upgrade(old, "x")
    assert not set(DUPLICATED) & set(new) and new["training_cases"] == CASES


@pytest.mark.parametrize("meta", [metadata(), {"format_version": 2, "modality": "ct"}, {}])
def test_upgrade_leaves_other_formats_alone(meta) -> None:
    assert upgrade(meta, "x") is meta


@pytest.mark.parametrize(("key", "value", "config_value"), [
    ("modality", "mr", "'ct'"), ("spatial_dims", 3, "2"), ("patch_size", 64, "32"),
    ("latent_dim", 16, "8"),
])
def test_upgrade_refuses_an_inconsistent_format_1_sidecar(key, value, config_value) -> None:
    old = {**v01(), key: value}
    with pytest.raises(CheckpointError) as err:
        upgrade(old, V01_SIDECAR)
    message = str(err.value)
    assert message.startswith(f"{V01_SIDECAR}: {key} is {value!r} but its config says "
                              f"{config_value}")
    assert "inconsistent" in message


# ---- read_spec ----
def without(key: str) -> dict[str, Any]:
    meta = metadata()
    del meta[key]
    return meta


def with_(**changes: Any) -> dict[str, Any]:
    return {**metadata(), **changes}


#: (sidecar, error type, message after "<source>: ")
INVALID = [
    *[pytest.param(without(k), CheckpointError, f"missing {k}", id=f"no {k}")
      for k in REQUIRED_KEYS],
    pytest.param({"config": {}}, CheckpointError,
                 "missing image_channels, spacing_mm, intensity, lesion_labels",
                 id="every key missing"),
    *[pytest.param(with_(spacing_mm=s), CheckpointError, "spacing_mm must be three positive "
                   f"numbers, not {s!r}", id=f"spacing {s!r}")
      for s in ([1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, -2.0, 1.0],
                "1,1,1", [1.0, "1", 1.0], None, [1.0, float("nan"), 1.0])],
    pytest.param(with_(spacing_mm=[1.0, float("inf"), 1.0]), CheckpointError,
                 "spacing_mm must be three positive numbers", id="spacing inf"),
    *[pytest.param(with_(training_cases=c), CheckpointError, "training_cases must be a list "
                   "of {'id': ...} records", id=f"cases {c!r}")
      for c in ("case_001", {"id": "a"}, [{"name": "a"}], ["case_001"], [CASES[0], 3])],
    pytest.param(with_(config={**metadata()["config"], "model": {"kind": "vae"}}), ConfigError,
                 "model.kind", id="unknown model kind"),
    pytest.param(with_(image_channels="two"), CheckpointError, "image_channels",
                 id="image_channels not a number"),
]


@pytest.mark.parametrize(("meta", "error", "message"), INVALID)
def test_read_spec_errors_name_the_source(meta, error, message) -> None:
    source = "/runs/x/checkpoints/step-00000005/checkpoint.json"
    with pytest.raises(error) as err:
        read_spec(copy.deepcopy(meta), source)
    assert type(err.value) is error
    assert str(err.value).startswith(f"{source}: ")
    assert message in str(err.value)


def test_read_spec_of_the_v01_sidecar() -> None:
    spec = read_spec(v01(), V01_SIDECAR)
    assert spec.training_cases is None and spec.training_case_ids is None
    assert (spec.modality, spec.spatial_dims, spec.patch_size, spec.latent_dim) == (
        "ct", 2, 32, 8)
    assert spec.config is not None and spec.config.train.ema_decay == 0.9


def test_read_spec_of_a_format_1_sidecar_checks_consistency() -> None:
    with pytest.raises(CheckpointError, match="inconsistent"):
        read_spec({**v01(), "patch_size": 64}, V01_SIDECAR)


# ---- CheckpointSpec ----
def test_spec_fields_are_typed_and_frozen() -> None:
    spec = read_spec(with_(spacing_mm=[1, 2, 3], lesion_labels=[1.0, 2], seed="4"), "s")
    assert spec.spacing_mm == (1.0, 2.0, 3.0) and all(type(s) is float for s in spec.spacing_mm)
    assert spec.lesion_labels == [1, 2] and all(type(v) is int for v in spec.lesion_labels)
    assert spec.seed == 4 and spec.image_channels == 1 and spec.intensity == INTENSITY
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.modality = "mr"


@pytest.mark.parametrize(("cases", "ids"), [
    (None, None), ([], []), (CASES, ["case_001", "7"]), ([{"id": 0}], ["0"]),
])
def test_training_case_ids(cases, ids) -> None:
    spec = CheckpointSpec("dcgan", "ct", 2, 32, 8, 1, (1.0, 1.0, 1.0), INTENSITY, [1],
                          training_cases=cases)
    assert spec.training_case_ids == ids
    assert spec.config is None and spec.seed == 0 and spec.data_source == ""


def test_read_spec_defaults_for_optional_entries() -> None:
    meta = metadata()
    for key in ("seed", "data_source", "training_cases"):
        del meta[key]
    spec = read_spec(meta, "s")
    assert spec.seed == 0 and spec.data_source == "" and spec.training_cases is None
