"""Validated configuration: pydantic models, YAML loading and per-modality presets.

Config flows one way: YAML -> :class:`MedganConfig` -> library calls. Unknown keys are errors
(``extra="forbid"``), every field has a default and a description, and validation failures become
a :class:`~medgan.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medgan.errors import ConfigError

Modality = Literal["ct", "mr", "pet", "none"]
LossKind = Literal["bce", "hinge", "wgan-gp"]

#: Per-modality default intensity mapping to [-1, 1] (physical units on the left).
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ct": {"hu_window": (-200.0, 300.0)},
    "mr": {"percentiles": (0.5, 99.9)},
    "pet": {"suv_max": 10.0},
    "none": {"value_range": (-1.0, 1.0)},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IntensityConfig(_Strict):
    """How image intensities are mapped to the model's [-1, 1] range, per modality."""

    hu_window: tuple[float, float] = Field(
        (-200.0, 300.0), description="CT: Hounsfield window (low, high) mapped to [-1, 1]."
    )
    percentiles: tuple[float, float] = Field(
        (0.5, 99.9), description="MR: intensity percentiles (low, high) mapped to [-1, 1]; the "
        "high end sits above 99.5 so hyperintense lesions (FLAIR, T2) keep their texture."
    )
    foreground: Literal["nonzero", "all"] = Field(
        "nonzero", description="MR: voxels used for the percentiles ('nonzero' = inside the body)."
    )
    suv_max: float = Field(10.0, gt=0, description="PET: SUV range [0, suv_max] mapped to [-1, 1].")
    value_range: tuple[float, float] = Field(
        (-1.0, 1.0), description="'none': input range (low, high) mapped linearly to [-1, 1]."
    )

    @field_validator("hu_window", "value_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, not {list(v)}")
        return v

    @field_validator("percentiles")
    @classmethod
    def _percentiles(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, not {list(v)}")
        return v


class DataConfig(_Strict):
    """Loading, resampling, label definition and patch extraction."""

    spacing_mm: tuple[float, float, float] | None = Field(
        None, description="Target voxel spacing in mm (x, y, z) after RAS reorientation; "
        "0 on an axis keeps the scan's own spacing there; null keeps it on every axis."
    )
    lesion_labels: list[int] = Field(
        [1], min_length=1, description="Label values that together form the lesion (binary mask)."
    )
    patch_size: int = Field(64, description="Patch edge length in voxels (2D: axial slice patch).")
    lesion_free_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of extracted patches that contain no lesion."
    )
    patches_per_case: int = Field(
        64, gt=0, description="Upper bound on lesion patches extracted per case (2D: slices; "
        "3D: jittered crops around the lesion)."
    )
    min_lesion_voxels: int = Field(
        10, ge=1, description="Slices/patches whose lesion has fewer voxels are skipped."
    )
    center_jitter: float = Field(
        0.25, ge=0.0, le=0.5, description="Random offset of patch centres from the lesion centre, "
        "as a fraction of the patch size."
    )
    cache_dir: Path | None = Field(
        None, description="Folder for the on-disk patch cache; null = <run dir>/cache."
    )

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and (any(x < 0 for x in v) or all(x == 0 for x in v)):
            raise ValueError(f"spacing values must be >= 0 mm (0 = keep), not {list(v)}")
        return v

    @field_validator("lesion_labels")
    @classmethod
    def _labels(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"lesion label values must be positive integers, not {v}")
        return sorted(set(v))


class ModelConfig(_Strict):
    """DCGAN generator/discriminator architecture and discriminator stabilisers."""

    latent_dim: int = Field(100, gt=0, description="Size of the latent vector z.")
    ngf: int = Field(64, gt=0, description="Generator base width (channels of the last block).")
    ndf: int = Field(
        64, gt=0, description="Discriminator base width (first block)."
    )
    d_norm: Literal["batch", "instance", "none"] = Field(
        "batch", description="Normalisation in the discriminator (WGAN-GP needs 'none'/'instance')."
    )
    spectral_norm: bool = Field(False, description="Spectral normalisation of discriminator convs.")
    minibatch_std: bool = Field(True, description="Minibatch standard-deviation feature in D.")
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability in D.")


class TrainConfig(_Strict):
    """Optimisation, stabilisers, logging and checkpoint cadence."""

    steps: int = Field(2000, gt=0, description="Total generator updates.")
    batch_size: int = Field(64, gt=0, description="Patches per step (per process).")
    lr_g: float = Field(2e-4, gt=0, description="Generator Adam learning rate.")
    lr_d: float = Field(2e-4, gt=0, description="Discriminator Adam learning rate.")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas.")
    loss: LossKind = Field(
        "bce", description="GAN loss: 'bce' (non-saturating), 'hinge' or 'wgan-gp'."
    )
    real_label: float = Field(
        0.9, gt=0.0, le=1.0, description="One-sided label smoothing target for real (bce only)."
    )
    gp_weight: float = Field(10.0, ge=0.0, description="Gradient-penalty weight (wgan-gp).")
    d_steps: int = Field(1, ge=1, description="Discriminator updates per generator update.")
    ema_decay: float | None = Field(
        0.999, description="Decay of the generator weight EMA used for sampling; null disables."
    )
    diffaugment: list[str] = Field(
        ["translation", "cutout", "brightness", "contrast"],
        description="DiffAugment policies applied to real and fake alike; [] disables.",
    )
    flip_augment: bool = Field(True, description="Random flips of real patches when sampled.")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="Mixed precision on CUDA ('auto' = bf16 if supported else fp16)."
    )
    channels_last: bool = Field(
        True, description="Channels-last memory format for models and batches: 2D and 3D on "
        "the CPU, 2D on CUDA (faster convolutions; no effect on results beyond rounding)."
    )
    compile: bool = Field(
        False, description="torch.compile the generator and discriminator (in place; the first "
        "steps are slower while the graphs compile)."
    )
    sync_batchnorm: bool = Field(
        False, description="Under torchrun with several CUDA processes: convert BatchNorm to "
        "SyncBatchNorm so batch statistics span all processes (GPU only)."
    )
    log_every: int = Field(25, gt=0, description="Steps between scalar logs (host sync).")
    sample_every: int = Field(500, gt=0, description="Steps between sample-grid PNGs.")
    checkpoint_every: int = Field(500, gt=0, description="Steps between checkpoints.")
    collapse_threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="Warn of mode collapse when the mean pairwise MS-SSIM "
        "of the fixed-noise batch exceeds this."
    )
    num_workers: int = Field(0, ge=0, description="Data-loading workers for patch extraction.")
    threads: int | None = Field(
        None, gt=0, description="CPU threads for torch; null = OMP_NUM_THREADS when set, else "
        "the usable cores. --threads and MEDGAN_THREADS take precedence (see medgan.threads)."
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @model_validator(mode="after")
    def _betas(self) -> TrainConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), not {list(self.betas)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, not {self.ema_decay}")
        return self


class MedganConfig(_Strict):
    """Everything one training run needs; saved in the run folder and in every checkpoint."""

    modality: Modality = Field(..., description="Image modality: ct, mr, pet or none.")
    spatial_dims: Literal[2, 3] = Field(2, description="2 = axial slice patches, 3 = volumes.")
    name: str = Field("medgan", description="Run name used in logs and the model card.")
    intensity: IntensityConfig = Field(
        default_factory=IntensityConfig, description="Mapping of intensities to [-1, 1]."
    )
    data: DataConfig = Field(
        default_factory=DataConfig, description="Resampling, lesion labels, patch extraction."
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Generator/discriminator architecture."
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Optimisation, stabilisers, logging cadence."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> MedganConfig:
        allowed = (32, 64, 128) if self.spatial_dims == 2 else (32, 64)
        if self.data.patch_size not in allowed:
            raise ValueError(
                f"data.patch_size must be one of {', '.join(map(str, allowed))} for "
                f"spatial_dims={self.spatial_dims}, not {self.data.patch_size}"
            )
        for policy in self.train.diffaugment:
            if policy not in ("translation", "cutout", "brightness", "contrast"):
                raise ValueError(
                    f"train.diffaugment entries must be translation, cutout, brightness or "
                    f"contrast, not {policy!r}"
                )
        if self.train.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise ValueError(
                "model.d_norm must be 'none' or 'instance' with train.loss 'wgan-gp', not 'batch' "
                "(batch statistics break the per-sample gradient penalty)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (paths as strings, tuples as lists)."""
        return json.loads(self.model_dump_json())


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown option (check the spelling; see configs/ for valid keys)"
    elif first["type"] == "missing":
        msg = "is required"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}" if loc else f"{source}: {msg}{more}"


def config_from_dict(data: dict[str, Any], source: str = "config") -> MedganConfig:
    """Validate a plain dict; raise :class:`ConfigError` naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of options, not {type(data).__name__}")
    try:
        return MedganConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> MedganConfig:
    """Read and validate a YAML config.

    ``overrides`` maps dotted keys to values, e.g. ``{"train.steps": 5}``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]}{where})") from None
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of options, not {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(
                    f"{path}: cannot override {dotted!r}: {key!r} is a value, not a section"
                )
        node[leaf] = value
    return config_from_dict(data, source=str(path))


def save_config(config: MedganConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (used for the run folder)."""
    from medgan.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
