"""Inputs of the quality and privacy evaluations: real training patches and a synthetic dataset.

Real patches come from :func:`~medgan.data.build_patch_bank` with the generator's config, i.e.
exactly the patches the GAN was trained on. Synthetic pairs are read from the ``dataset.json``
written by ``medgan sample`` (NIfTI in physical units) and mapped back to model space [-1, 1]
with the intensity mapping of the checkpoint (the one the writer undid), so both sets are
compared in the space the generator works in.

Where the settings come from, first match wins: ``--config`` (patch extraction) and
``--checkpoint``; else the checkpoint recorded in the synthetic ``dataset.json`` (``medgan``
section), when it still exists and its hash matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.checkpoint import checkpoint_sha256, read_sidecar, resolve_checkpoint
from medgan.config import MedganConfig, config_from_dict
from medgan.data import build_patch_bank, load_datalist
from medgan.data.intensity import IntensityMapping
from medgan.data.transforms import read_image
from medgan.errors import ConfigError, DataError
from medgan.modalities import modality_of_name
from medgan.sampling.datalist import recorded_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Config, intensity mapping and checkpoint facts used to interpret both sets."""

    config: MedganConfig
    intensity: IntensityMapping | None  # None: use the real data's mapping
    checkpoint: Path | None
    checkpoint_sha256: str | None
    seed: int


@dataclass
class SyntheticSet:
    """Synthetic pairs: ``images`` (N, C, *P) physical units, ``masks`` (N, *P) uint8,
    ``spacing_mm`` of the files, the ``dataset.json`` ``medgan`` section and the file names."""

    images: np.ndarray
    masks: np.ndarray
    spacing_mm: tuple[float, float, float]
    info: dict[str, Any]
    files: list[str]


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: synthetic dataset.json not found (run medgan sample)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a decathlon dataset.json")
    return data


def _recorded_checkpoint(synthetic: str | Path, info: dict[str, Any]) -> Path | None:
    """The checkpoint named in the synthetic dataset.json, if it exists and its hash matches."""
    path = recorded_checkpoint(synthetic, info)
    if path is None or not path.exists():
        return None
    folder = resolve_checkpoint(path)
    digest = checkpoint_sha256(folder)
    if info.get("checkpoint_sha256") not in (None, digest):
        log.warning("%s: checkpoint changed since sampling; not used", folder)
        return None
    return folder


def _check_modality(config: MedganConfig, meta: dict[str, Any], dataset: dict[str, Any],
                    synthetic: str | Path, folder: Path | None) -> None:
    """Refuse a config whose modality differs from the generator's or the samples': the real
    patches would be normalised for another modality and every comparison would be void."""
    if meta and meta["config"].get("modality") not in (None, config.modality):
        raise ConfigError(f"{folder}: the generator was trained on {meta['config']['modality']} "
                          f"but the config is for {config.modality}; pass the generator's "
                          "training config")
    names = dataset.get("modality") if isinstance(dataset.get("modality"), dict) else {}
    found = {modality_of_name(str(n)) for n in names.values()} - {None}
    if len(found) == 1 and config.modality not in found:
        raise ConfigError(f"{Path(synthetic) / 'dataset.json'}: the synthetic samples are "
                          f"{found.pop()} but the config is for {config.modality}; pass the "
                          "generator's training config or `checkpoint`")


def resolve_settings(synthetic: str | Path, checkpoint: str | Path | None = None,
                     config: MedganConfig | None = None) -> Settings:
    """Config and intensity mapping for comparing ``synthetic`` with the real data."""
    dataset = _read_json(Path(synthetic) / "dataset.json")
    info = dataset.get("medgan", {}) or {}
    folder = resolve_checkpoint(checkpoint) if checkpoint is not None else None
    if folder is None and config is None:
        folder = _recorded_checkpoint(synthetic, info)
    meta: dict[str, Any] = read_sidecar(folder) if folder is not None else {}
    if config is None:
        if not meta:
            raise ConfigError(f"{synthetic}: cannot tell how the real patches were made; pass "
                              "the generator's `checkpoint` or its training `config`")
        config = config_from_dict(meta["config"], source=str(folder))
    _check_modality(config, meta, dataset, synthetic, folder)
    if "intensity" in info:
        intensity = IntensityMapping.from_dict(info["intensity"])
    elif "intensity" in meta:
        intensity = IntensityMapping.from_dict(meta["intensity"])
    else:
        intensity = None
    sha = checkpoint_sha256(folder) if folder is not None else None
    return Settings(config, intensity, folder, sha, int(meta.get("seed", 0)))


def read_synthetic(folder: str | Path, spatial_dims: int) -> SyntheticSet:
    """Read every pair listed in ``folder/dataset.json``; 2D patches lose their 1-slice axis."""
    folder = Path(folder)
    info = _read_json(folder / "dataset.json").get("medgan", {}) or {}
    cases = load_datalist(folder / "dataset.json")
    images, masks, spacing = [], [], None
    for case in cases:
        paths = case["image"] if isinstance(case["image"], list) else [case["image"]]
        img = torch.cat([read_image(p) for p in paths]).float()  # (C, X, Y, Z)
        lab = read_image(case["label"])
        spacing = spacing or tuple(float(s) for s in img.pixdim[:3])
        if spatial_dims == 2:
            if img.shape[-1] != 1:
                raise DataError(f"{paths[0]}: a 2D synthetic patch must have one slice, not "
                                f"shape {tuple(img.shape[1:])}")
            img, lab = img[..., 0], lab[..., 0]
        images.append(img.as_tensor().numpy())
        masks.append((lab.as_tensor()[0].numpy() > 0).astype(np.uint8))
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise DataError(f"{folder}: synthetic patches differ in shape ({sorted(shapes)})")
    return SyntheticSet(np.stack(images), np.stack(masks), spacing or (1.0, 1.0, 1.0), info,
                        [c["label"] for c in cases])


def real_bank(real: str | Path, settings: Settings, progress: bool = True) -> Any:
    """The real training patches (:class:`~medgan.data.PatchBank`) of ``real``."""
    return build_patch_bank(load_datalist(real), settings.config, seed=settings.seed,
                            progress=progress)


def to_model_space(images: np.ndarray, mapping: IntensityMapping) -> torch.Tensor:
    """Physical ``(N, C, *P)`` -> model space [-1, 1] with one dataset-level mapping."""
    return torch.stack([torch.as_tensor(mapping.forward(x)).float() for x in images])


def real_physical(bank: Any, index: torch.Tensor) -> np.ndarray:
    """Real patches ``bank.images[index]`` in physical units, each with its own case's mapping."""
    out = []
    for i in index.tolist():
        mapping = IntensityMapping.from_dict(bank.case_mappings[int(bank.case_index[i])])
        out.append(np.asarray(mapping.inverse(bank.images[i].numpy()), dtype=np.float32))
    return np.stack(out) if out else np.zeros((0, *bank.images.shape[1:]), np.float32)


def check_shapes(real_images: torch.Tensor, synthetic: SyntheticSet, source: str | Path) -> None:
    """Both sets must hold patches of one ``(C, *P)`` shape."""
    if tuple(real_images.shape[1:]) != tuple(synthetic.images.shape[1:]):
        raise DataError(
            f"{source}: synthetic patches have shape {tuple(synthetic.images.shape[1:])} but "
            f"the real training patches {tuple(real_images.shape[1:])}; pass the generator's "
            "`checkpoint` or `config`"
        )
