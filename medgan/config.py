"""Validated configuration: pydantic models, YAML loading and per-modality presets.

Config flows one way: YAML -> :class:`MedganConfig` -> library calls. Unknown keys are errors
(``extra="forbid"``), every field has a default and a description, and validation failures become
a :class:`~medgan.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medgan.atomic import write_text_atomic
from medgan.errors import ConfigError

Modality = Literal["ct", "mr", "pet", "none"]
LossKind = Literal["bce", "hinge", "wgan-gp"]
ModelKindName = Literal["dcgan", "inpaint"]
MaskSourceName = Literal["real", "ellipsoid"]
DiffAugmentPolicy = Literal["translation", "cutout", "brightness", "contrast"]
DiscriminatorNorm = Literal["batch", "instance", "none"]
UpsampleMode = Literal["deconv", "resize"]

#: Model kinds a config may name; :mod:`medgan.checkpoint.kinds` builds each one.
MODEL_KINDS: tuple[str, ...] = get_args(ModelKindName)
#: DiffAugment policies (implemented in :mod:`medgan.training.diffaugment`).
DIFFAUGMENT_POLICIES: tuple[str, ...] = get_args(DiffAugmentPolicy)
DISCRIMINATOR_NORMS: tuple[str, ...] = get_args(DiscriminatorNorm)
UPSAMPLE_MODES: tuple[str, ...] = get_args(UpsampleMode)
#: Patch edge lengths each rank supports (powers of two whose 4^d bottleneck fits in memory).
PATCH_SIZES: dict[int, tuple[int, ...]] = {2: (32, 64, 128), 3: (32, 64)}


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
    roi_names: list[str | int] = Field(
        ["*GTV*"], min_length=1,
        description="Labels stored as DICOM RTSTRUCT or SEG: the ROIs / segments that form the "
        "lesion, as case-insensitive name patterns ('*GTV*') or ROI / segment numbers; their "
        "union is the lesion. A datalist entry's own 'roi_names' takes precedence.",
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

    kind: ModelKindName = Field(
        "dcgan", description="Model kind: 'dcgan' (unconditional generator of lesion image + "
        "mask patches from a latent vector) or 'inpaint' (restores an erased region of a real "
        "patch with a lesion shaped like a given mask; settings in the inpaint section)."
    )
    latent_dim: int = Field(100, gt=0, description="Size of the latent vector z.")
    ngf: int = Field(64, gt=0, description="Generator base width (channels of the last block).")
    upsample: UpsampleMode = Field(
        "deconv", description="How the generator doubles its feature maps: 'deconv' (transposed "
        "convolution, DCGAN) or 'resize' (nearest-neighbour x2, then a kernel-3 convolution: no "
        "checkerboard texture, 2-3x the generator's compute). The configs in configs/ use "
        "'resize'; a config without the key (every checkpoint of medgan 0.1) means 'deconv'."
    )
    ndf: int = Field(64, gt=0, description="Discriminator base width (first block).")
    d_norm: DiscriminatorNorm = Field(
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
    loss: LossKind = Field("bce", description="GAN loss: 'bce' (non-saturating), 'hinge' or "
                           "'wgan-gp'.")
    real_label: float = Field(
        0.9, gt=0.0, le=1.0, description="One-sided label smoothing target for real (bce only)."
    )
    gp_weight: float = Field(10.0, ge=0.0, description="Gradient-penalty weight (wgan-gp).")
    d_steps: int = Field(1, ge=1, description="Discriminator updates per generator update.")
    ema_decay: float | None = Field(
        0.999, description="Decay of the generator weight EMA used for sampling; null disables."
    )
    diffaugment: list[DiffAugmentPolicy] = Field(
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


class InpaintConfig(_Strict):
    """Lesion inpainting (``model.kind: inpaint``); mm become voxels at the finest in-plane
    spacing of the training patches (:func:`medgan.models.inpaint.mm_to_voxels`)."""

    erase_margin_mm: float = Field(3.0, ge=0.0, le=20.0, description="The erase region E is "
                                   "the lesion mask dilated by this margin; the generator "
                                   "restores E, every voxel outside it is kept bit for bit.")
    l1_weight: float = Field(100.0, ge=0.0, description="Weight of the L1 distance to the "
                             "real voxels inside E, added to the adversarial generator loss.")
    empty_fraction: float = Field(0.25, ge=0.0, le=1.0, description="Share of training pairs "
                                  "with an empty mask: a blob of lesion-free tissue is erased and "
                                  "restored as healthy tissue (lesion-free patches always are).")
    blob_radius_mm: tuple[float, float] = Field(
        (3.0, 10.0), description="Radius range (low, high) of the healthy-fill blobs, in mm.")
    tissue_threshold: float | None = Field(-0.9, ge=-1.0, le=1.0, description="Healthy-fill "
                                           "blobs are centred above this model-space value when "
                                           "possible (off the background); null = anywhere.")
    noise_channels: int = Field(8, ge=1, description="Noise maps appended at the bottleneck.")
    local_discriminator: bool = Field(False, description="Add a second discriminator on a "
                                      "crop around the erase region.")
    local_size: int = Field(32, ge=8, description="Edge of the local discriminator's crop in "
                            "voxels (<= patch_size).")
    mask_source: MaskSourceName = Field("real", description="Lesion shapes when inserting "
                                        "lesions (medgan sample --hosts): 'real' = the training "
                                        "masks stored in the checkpoint, deformed; 'ellipsoid' = "
                                        "ellipsoids sized like them.")
    grid_samples: int = Field(8, ge=1, le=64, description="Rows of the sample grids.")

    @field_validator("blob_radius_mm")
    @classmethod
    def _blob(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1]:
            raise ValueError(f"must be (low, high) with 0 < low <= high, not {list(v)}")
        return v


#: Settings that do not apply to ``model.kind: inpaint`` (an error when changed from default).
NOT_FOR_INPAINT = {"model": ("latent_dim", "upsample", "d_norm", "spectral_norm",
                             "minibatch_std", "d_dropout"),
                   "train": ("real_label", "gp_weight", "diffaugment", "amp", "compile",
                             "sync_batchnorm", "collapse_threshold")}


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
    inpaint: InpaintConfig = Field(
        default_factory=InpaintConfig, description="Lesion inpainting (model.kind: inpaint)."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> MedganConfig:
        allowed = PATCH_SIZES[self.spatial_dims]
        if self.data.patch_size not in allowed:
            raise ValueError(
                f"data.patch_size must be one of {', '.join(map(str, allowed))} for "
                f"spatial_dims={self.spatial_dims}, not {self.data.patch_size}"
            )
        if self.model.kind == "inpaint":
            self._inpaint_checks()  # first: the DCGAN-only checks below do not apply
        if self.train.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise ValueError(
                "model.d_norm must be 'none' or 'instance' with train.loss 'wgan-gp', not 'batch' "
                "(batch statistics break the per-sample gradient penalty)"
            )
        return self

    def _inpaint_checks(self) -> None:
        for section, names in NOT_FOR_INPAINT.items():
            part = getattr(self, section)
            for name in names:  # compared with the default, so a saved config reloads
                if getattr(part, name) != type(part).model_fields[name].get_default(
                        call_default_factory=True):
                    raise ValueError(f"{section}.{name} does not apply to model.kind 'inpaint' "
                                     "(remove it)")
        if self.train.loss == "wgan-gp" or self.train.d_steps != 1:
            raise ValueError(f"model.kind 'inpaint' needs train.loss 'bce' or 'hinge' (not "
                             f"{self.train.loss!r}) and train.d_steps 1 (not {self.train.d_steps})")
        if self.inpaint.local_size > self.data.patch_size:
            raise ValueError(f"inpaint.local_size must be at most data.patch_size="
                             f"{self.data.patch_size}, not {self.inpaint.local_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (paths as strings, tuples as lists)."""
        return json.loads(self.model_dump_json())


def _nearest_key(loc: tuple[Any, ...]) -> str | None:
    """The valid config key closest to the unknown ``loc`` (same section), if any is close."""
    model: Any = MedganConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    names = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return ".".join([*map(str, loc[:-1]), close[0]]) if close else None


def _problem(first: dict[str, Any]) -> str:
    loc = tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        near = _nearest_key(loc)
        hint = f"; did you mean {near}?" if near else " (check the spelling; see configs/)"
        return f"{dotted}: unknown option{hint}"
    if first["type"] == "missing":
        return f"{dotted}: is required"
    if first["type"] == "literal_error":
        allowed = first.get("ctx", {}).get("expected", "")
        return f"{dotted}: must be {allowed}, not {first.get('input')!r}"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{dotted}: {msg}" if dotted else msg


def _from_overrides(loc: tuple[Any, ...], overrides: dict[str, Any]) -> bool:
    dotted = ".".join(str(p) for p in loc)
    return any(dotted == k or dotted.startswith(k + ".") or k.startswith(dotted + ".")
               for k in overrides)


def config_from_dict(data: dict[str, Any], source: str = "config",
                     overrides: dict[str, Any] | None = None) -> MedganConfig:
    """Validate ``data`` with ``overrides`` (dotted keys, e.g. ``{"train.steps": 5}``) applied.

    Raises :class:`ConfigError` naming ``source``, or the ``overrides`` parameter when the
    offending key came from there, and the field; an unknown key gets the nearest valid one.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of options, not {type(data).__name__}")
    overrides = overrides or {}
    merged = apply_overrides(data, overrides)
    try:
        return MedganConfig.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        more = len(err.errors()) - 1
        text = _problem(first) + (f" (and {more} more problem(s))" if more else "")
        if _from_overrides(tuple(first["loc"]), overrides):
            raise ConfigError(text, param="overrides") from None
        raise ConfigError(f"{source}: {text}") from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key of ``overrides`` set (sections made as needed)."""
    out = json.loads(json.dumps(data, default=str))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted!r}: {key!r} is a value, not a section",
                                  param="overrides")
        node[leaf] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a config file, unvalidated (no torch import; fast)."""
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
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> MedganConfig:
    """Read and validate a YAML config.

    ``overrides`` maps dotted keys to values, e.g. ``{"train.steps": 5}``.
    """
    return config_from_dict(read_config_file(path), source=str(path), overrides=overrides)


def save_config(config: MedganConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (used for the run folder)."""
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
