"""Non-GAN augmentation baseline of the segmentation benchmark: CarveMix.

Moved to :mod:`medgan.augment.carvemix`; the names stay importable from here.
"""

from medgan.augment.carvemix import (
    LesionSnippet,
    RandCarveMixd,
    build_lesion_snippets,
    carve_mix,
)

__all__ = ["LesionSnippet", "RandCarveMixd", "build_lesion_snippets", "carve_mix"]
