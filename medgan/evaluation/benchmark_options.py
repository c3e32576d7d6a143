"""Checks of the segmentation benchmark's options, before any scan is loaded: arms and the
networks they need, ratios, the config that loads the scans, the run settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from medgan.config import MedganConfig
from medgan.errors import ConfigError, DataError
from medgan.evaluation.arms import ARMS, GAN_ARMS, INPAINT_ARMS
from medgan.evaluation.segmentation_run import BenchmarkSettings


def check_arms(arms: Sequence[str], checkpoint: Any, config: Any, train_generator: Any,
               inpainter: Any = None, train_inpainter: Any = None) -> list[str]:
    """The chosen arms (duplicates dropped), after checking each has the network it needs."""
    chosen = list(dict.fromkeys(arms))
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or not chosen:
        raise ConfigError(f"`arms` must be a comma-separated subset of {', '.join(ARMS)}, "
                          f"not {','.join(arms)!r}")
    if checkpoint is not None and train_generator is not None:
        raise ConfigError("pass either `checkpoint` or --train-generator, not both")
    if inpainter is not None and train_inpainter is not None:
        raise ConfigError("pass either `inpainter` or --train-inpainter, not both")
    if checkpoint is None and train_generator is None and any(a in GAN_ARMS for a in chosen):
        raise ConfigError(f"arms {', '.join(a for a in chosen if a in GAN_ARMS)} need a "
                          "generator: pass --train-generator CONFIG (one per regime) or "
                          "`checkpoint`")
    if inpainter is None and train_inpainter is None and any(a in INPAINT_ARMS for a in chosen):
        raise ConfigError(f"arms {', '.join(a for a in chosen if a in INPAINT_ARMS)} need an "
                          "inpainter: pass --train-inpainter CONFIG (one per regime) or "
                          "`inpainter`")
    if all(x is None for x in (checkpoint, config, train_generator, inpainter, train_inpainter)):
        raise ConfigError("pass --train-generator, --train-inpainter or `checkpoint` (their "
                          "config loads the scans) or `config`")
    return chosen


def check_ratios(ratios: float | Sequence[float], settings: BenchmarkSettings) -> list[float]:
    """Sorted distinct ratios, each in (0, ``settings.max_ratio``]."""
    values = [float(ratios)] if isinstance(ratios, int | float) else [float(r) for r in ratios]
    values = sorted(dict.fromkeys(values))
    top = settings.max_ratio
    bad = [r for r in values if not 0.0 < r <= top + 1e-9]
    if bad or not values:
        raise ConfigError(f"`ratio` must be numbers in (0, {top:.3g}] (the lesion slots' share "
                          f"of every batch, which the synthetic arm can fill at most), not "
                          f"{bad or values}")
    return values


def check_kind(config: MedganConfig | None, kind: str, option: str) -> MedganConfig | None:
    """``config`` after checking its ``model.kind`` (the per-regime generator or inpainter)."""
    if config is not None and config.model.kind != kind:
        raise ConfigError(f"{option}: model.kind is {config.model.kind!r}, but this option "
                          f"trains a {kind!r} model", param=option)
    return config


def _agrees(config: MedganConfig, saved: MedganConfig, what: str) -> None:
    for field in ("modality", "spatial_dims", "intensity"):
        if getattr(config, field) != getattr(saved, field):
            raise ConfigError(f"{what} {field} differs from the one that loads the scans; "
                              "synthetic and real images would not share one intensity space")
    if config.data.lesion_labels != saved.data.lesion_labels:
        raise ConfigError(f"{what} data.lesion_labels differ from the ones that load the scans")


def resolve_config(generator: Any, config: MedganConfig | None,
                   gen_config: MedganConfig | None = None, inpainter: Any = None,
                   inp_config: MedganConfig | None = None) -> MedganConfig:
    """The config that loads the scans: ``config``, else the generator's, else the
    inpainter's; every network's config must agree with it (modality, dims, intensity,
    lesion labels)."""
    saved = [c for c in (gen_config, None if generator is None else generator.config,
                         inp_config, None if inpainter is None else inpainter.config)
             if c is not None]
    if config is None and not saved:
        raise ConfigError("pass `checkpoint` (its config is used to load the scans) or "
                          "`config`")
    chosen = config if config is not None else saved[0]
    for other in saved:
        if other is not chosen:
            _agrees(other, chosen, "the generator's or inpainter's config:"
                    if config is None else "`config`:")
    return chosen


def normalised_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A recorded ``settings`` dict with the fields added since it was written at their
    defaults (so a benchmark started by an older medgan resumes)."""
    try:
        return BenchmarkSettings(**settings).to_dict()
    except TypeError:
        return settings


def benchmark_settings(fast: bool, iterations: int | None, generator: Any, spatial_dims: int,
                       overrides: dict[str, Any]) -> BenchmarkSettings:
    """Full or fast settings with the sizes that depend on the generator filled in.

    ``generator``: a loaded generator, a generator config or None (patch 64)."""
    try:
        settings = (BenchmarkSettings.fast(**overrides) if fast
                    else BenchmarkSettings(**overrides))
    except TypeError as err:
        raise ConfigError(f"unknown benchmark setting ({err})") from None
    if iterations is not None:
        settings = replace(settings, iterations=int(iterations))
    if settings.patch_size is None:
        size = (generator.data.patch_size if isinstance(generator, MedganConfig)
                else generator.patch_size if generator is not None else 64)
        settings = replace(settings, patch_size=int(size))
    if settings.batch_size is None:
        settings = replace(settings, batch_size=8 if spatial_dims == 2 else 2)
    if settings.lesion_slots is None:
        settings = replace(settings, lesion_slots=max(1, int(settings.batch_size) // 2))
    if int(settings.patch_size) % (2 ** len(settings.strides)) != 0:
        raise ConfigError(f"patch size {settings.patch_size} must be divisible by "
                          f"{2 ** len(settings.strides)} (the UNet's downsampling)")
    if settings.placement_range is not None:
        low, high = (float(v) for v in settings.placement_range)
        if not -1.0 <= low < high <= 1.0:
            raise ConfigError(f"`placement_range` must be (low, high) with -1 <= low < high <= 1 "
                              f"(model units), not {tuple(settings.placement_range)}")
        settings = replace(settings, placement_range=(low, high))
    if settings.eval_every < 1 or settings.patience < 0 or settings.min_component_voxels < 0:
        raise ConfigError("eval_every must be positive, patience and min_component_voxels "
                          "non-negative")
    return settings


def check_channels(cases: Sequence[dict[str, Any]], generator: Any, data: str | Path) -> None:
    """The scans have as many channels as the generator (or inpainter) makes."""
    if generator is None:
        return
    channels = int(cases[0]["image"].shape[0])
    made = generator.image_channels
    if channels != made:
        raise DataError(f"{data}: images have {channels} channel(s) but the generator makes "
                        f"{made}")
