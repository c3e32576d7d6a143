"""The checkpoint facts every loaded model exposes, read from its :class:`CheckpointSpec`.

:class:`~medgan.sampling.loader.LoadedGenerator` (DCGAN) and
:class:`~medgan.sampling.inpainter.LoadedInpainter` share them through :class:`CheckpointFacts`.
"""

from __future__ import annotations

from typing import Any

from medgan.checkpoint import CheckpointSpec
from medgan.data.intensity import IntensityMapping
from medgan.errors import CheckpointError


def spec_field(name: str, doc: str) -> Any:
    """A read-only property returning ``self.spec.<name>`` (the checkpoint's facts)."""
    return property(lambda self: getattr(self.spec, name), doc=doc)


class CheckpointFacts:
    """Mixin of a loaded model with ``spec`` (:class:`CheckpointSpec`) and
    ``checkpoint_path`` attributes."""

    spec: CheckpointSpec | None
    checkpoint_path: Any

    @property
    def config(self) -> Any:
        """The :class:`~medgan.config.MedganConfig` the model was trained with."""
        if self.spec.config is None:
            raise CheckpointError(f"{self.checkpoint_path}: this generator has no training "
                                  "config (it was not loaded from a checkpoint)")
        return self.spec.config

    modality = spec_field("modality", "Config modality: ct, mr, pet or none.")
    spatial_dims = spec_field("spatial_dims", "2 or 3.")
    patch_size = spec_field("patch_size", "Patch edge length in voxels.")
    image_channels = spec_field("image_channels", "Image channels.")
    spacing_mm = spec_field("spacing_mm", "Voxel spacing (x, y, z) in mm of the training "
                            "patches.")

    @property
    def intensity(self) -> IntensityMapping:
        """Map between model space [-1, 1] and physical units (HU, SUV, MR scale)."""
        return IntensityMapping.from_dict(self.spec.intensity)

    @property
    def lesion_labels(self) -> list[int]:
        return list(self.spec.lesion_labels)
