"""The arm-specific pieces of a segmentation-benchmark run: the transform that adds a lesion to a
real context crop (GAN insertion, CarveMix, inpainting) or the pool of synthetic patches.

Every transform gets the context crops of :class:`~medgan.evaluation.segmentation_patches.
PatchStream` (``image`` in model space [-1, 1], ``label``, ``foreground`` = body voxels of the
central patch) and must keep the whole added lesion inside ``foreground``; it is called with
probability 1 and returns the data unchanged when the lesion does not fit (the stream redraws).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medgan.augment import RandSyntheticLesiond
from medgan.augment.carvemix import RandCarveMixd, build_lesion_snippets
from medgan.augment.inpaint import RandLesionInpaintd
from medgan.augment.placement import PlacementSettings
from medgan.errors import ConfigError

if TYPE_CHECKING:
    from medgan.evaluation.segmentation_run import BenchmarkSettings

log = logging.getLogger(__name__)
KEYS = ("image", "label")
#: smallest distance (mm) of an inpainted lesion from an existing one (placement's default)
INPAINT_MARGIN_MM = PlacementSettings().margin_mm


class ArmFactory:
    """Builds ``(arm_transform, synthetic_pool)`` for one regime's runs.

    Args:
        generator: the regime's unconditional generator (``LoadedGenerator``) or None.
        train_cases: the regime's prepared training cases (CarveMix copies their lesions only).
        spatial_dims: 2 or 3.
        inpainter: the regime's inpainter (``LoadedInpainter``) or None; its lesion shapes are
            the masks of the regime's training patients it was trained on.
        spacing_mm: voxel spacing of the benchmark's scans (placement margin, mask sizes).
        mask_source: ``"real"`` or ``"ellipsoid"`` lesion shapes for the inpaint arm; None =
            the inpainter's ``inpaint.mask_source``.
    """

    def __init__(self, generator: Any, train_cases: Sequence[dict[str, Any]],
                 spatial_dims: int, inpainter: Any = None,
                 spacing_mm: Sequence[float] | None = None,
                 mask_source: str | None = None) -> None:
        self.generator, self.train_cases, self.spatial_dims = generator, train_cases, spatial_dims
        self.inpainter, self.mask_kind = inpainter, mask_source
        self.spacing_mm = None if spacing_mm is None else \
            tuple(float(s) for s in spacing_mm[:spatial_dims])
        self._snippets: list[Any] | None = None

    def __call__(self, arm: str, seed: int, settings: BenchmarkSettings) -> tuple[Any, Any]:
        if arm == "real+aug+insert":
            return RandSyntheticLesiond(KEYS, generator=self.generator, prob=1.0,
                                        foreground_key="foreground", num_attempts=20,
                                        units="model"), None
        if arm == "real+aug+synthetic":
            from medgan.evaluation.segmentation_run import synthetic_pool

            return None, synthetic_pool(self.generator, settings, seed)
        if arm == "real+aug+carvemix":
            if self._snippets is None:  # from this regime's training cases only
                self._snippets = build_lesion_snippets(self.train_cases, self.spatial_dims)
                if not self._snippets:
                    log.warning("no lesion to copy in the training cases; CarveMix is a no-op")
            return RandCarveMixd(KEYS, self._snippets, prob=1.0,
                                 foreground_key="foreground"), None
        if arm == "real+aug+inpaint":
            return self._inpaint(), None
        return None, None

    def _inpaint(self) -> RandLesionInpaintd:
        """Inpainting into the central patch's body voxels; the images are already in model
        space, so the bare network is used (no intensity mapping)."""
        if self.inpainter is None:
            raise ConfigError("arm real+aug+inpaint needs an inpainter: pass --train-inpainter "
                              "CONFIG (one per regime) or `inpainter`")
        from medgan.sampling.cases import mask_source

        return RandLesionInpaintd(
            KEYS, generator=self.inpainter.generator,
            mask_source=mask_source(self.inpainter, self.mask_kind), prob=1.0,
            placement=PlacementSettings(region="key", margin_mm=INPAINT_MARGIN_MM),
            region_key="foreground", spacing_mm=self.spacing_mm)
