"""What a checkpoint says about its model, in one place: written by training, read by everyone.

The sidecar (``checkpoint.json``) holds, besides the file hashes of :mod:`.store`:

* ``config``: the resolved :class:`~medgan.config.MedganConfig` (modality, spatial_dims,
  patch_size, latent_dim and every other setting live here, once);
* ``image_channels`` (the model kind is ``config.model.kind``, see :mod:`.kinds`);
* ``spacing_mm``, ``intensity`` (the mapping to physical units) and ``lesion_labels``;
* ``training_cases``: the id and SHA-256 of every image and label file of each case trained on,
  so that a benchmark can refuse a generator that saw its test patients;
* ``seed``, ``data_source``, ``data_fingerprint``, patch counts, ``world_size``.

:func:`read_spec` validates a sidecar (format 1 of medgan 0.1 included) into a
:class:`CheckpointSpec`, the typed view sampling, evaluation and ``medgan info`` use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgan._version import __version__
from medgan.config import MedganConfig, config_from_dict
from medgan.errors import CheckpointError

#: Entries every generator sidecar must have (format 2).
REQUIRED_KEYS = ("image_channels", "spacing_mm", "intensity", "lesion_labels", "config")
#: Entries that matter only for resuming training.
TRAINING_KEYS = ("training", "history")
#: Format-1 entries that duplicated ``config`` (read from ``config`` since format 2).
_DUPLICATED = {"modality": ("modality",), "spatial_dims": ("spatial_dims",),
               "patch_size": ("data", "patch_size"), "latent_dim": ("model", "latent_dim")}


def build_metadata(config: MedganConfig, *, image_channels: int,
                   spacing_mm: tuple[float, ...], intensity: dict[str, Any],
                   training_cases: list[dict[str, Any]], seed: int,
                   data_source: str | Path = "", data_fingerprint: str = "",
                   n_patches: int = 0, n_lesion_patches: int = 0, world_size: int = 1
                   ) -> dict[str, Any]:
    """The sidecar entries that describe a trained model (everything sampling needs besides
    the weights). ``world_size`` is the number of training processes (torchrun)."""
    return {
        "config": config.to_dict(), "image_channels": int(image_channels),
        "spacing_mm": [float(s) for s in spacing_mm], "intensity": intensity,
        "lesion_labels": list(config.data.lesion_labels), "seed": int(seed),
        "data_source": str(data_source), "data_fingerprint": data_fingerprint,
        "training_cases": training_cases, "n_cases": len(training_cases),
        "n_patches": int(n_patches), "n_lesion_patches": int(n_lesion_patches),
        "world_size": int(world_size), "medgan_version": __version__,
    }


def upgrade(meta: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """A sidecar in the current layout: format 1 loses its duplicated entries (after checking
    they agree with its ``config``) and gains ``training_cases: None`` (unknown). Other
    formats are returned as they are."""
    if meta.get("format_version", 2) != 1:
        return meta
    out = dict(meta)
    config = meta.get("config") or {}
    for key, path in _DUPLICATED.items():
        if key not in out:
            continue
        node: Any = config
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        value = out.pop(key)
        if node is not None and node != value:
            raise CheckpointError(f"{source}: {key} is {value!r} but its config says {node!r}; "
                                  "the checkpoint sidecar is inconsistent")
    out.setdefault("training_cases", None)
    return out


@dataclass(frozen=True)
class CheckpointSpec:
    """The validated model description of a checkpoint.

    ``config`` is the training config (None for a generator built in memory, e.g. a stand-in
    network in tests); ``training_cases`` is None when they were not recorded (medgan 0.1).
    ``spacing_mm`` is (x, y, z) in mm; ``intensity`` an :class:`~medgan.data.IntensityMapping`
    as a dict.
    """

    kind: str
    modality: str
    spatial_dims: int
    patch_size: int
    latent_dim: int
    image_channels: int
    spacing_mm: tuple[float, float, float]
    intensity: dict[str, Any]
    lesion_labels: list[int]
    config: MedganConfig | None = None
    training_cases: list[dict[str, Any]] | None = None
    seed: int = 0
    data_source: str = ""

    @property
    def training_case_ids(self) -> list[str] | None:
        if self.training_cases is None:
            return None
        return [str(c["id"]) for c in self.training_cases]


def read_spec(meta: dict[str, Any], source: str | Path) -> CheckpointSpec:
    """Validate a sidecar (any readable format) into a :class:`CheckpointSpec`."""
    meta = upgrade(meta, source)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{source}: missing {', '.join(missing)}; not a generator "
                              "checkpoint written by medgan train")
    spacing = meta["spacing_mm"]
    if not (isinstance(spacing, list) and len(spacing) == 3 and all(
            isinstance(s, int | float) and math.isfinite(s) and s > 0 for s in spacing)):
        raise CheckpointError(f"{source}: spacing_mm must be three positive numbers, "
                              f"not {spacing!r}")
    cases = meta.get("training_cases")
    if cases is not None and not (isinstance(cases, list) and all(
            isinstance(c, dict) and "id" in c for c in cases)):
        raise CheckpointError(f"{source}: training_cases must be a list of {{'id': ...}} "
                              "records")
    channels = meta["image_channels"]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise CheckpointError(f"{source}: image_channels must be a positive integer, not "
                              f"{channels!r}")
    x, y, z = (float(s) for s in spacing)
    config = config_from_dict(meta["config"], source=str(source))  # checks model.kind too
    return CheckpointSpec(
        kind=config.model.kind, modality=config.modality, spatial_dims=config.spatial_dims,
        patch_size=config.data.patch_size, latent_dim=config.model.latent_dim, config=config,
        image_channels=int(meta["image_channels"]), spacing_mm=(x, y, z),
        intensity=meta["intensity"], lesion_labels=[int(v) for v in meta["lesion_labels"]],
        training_cases=cases, seed=int(meta.get("seed", 0)),
        data_source=str(meta.get("data_source", "")))
