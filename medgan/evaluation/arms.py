"""Names of the segmentation benchmark's arms, defined once (imports nothing heavy: the CLI
uses them for its option choices and must stay fast to start)."""

from __future__ import annotations

#: Every arm, in report order.
ARMS = ("real", "real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix",
        "real+aug+inpaint")
#: The arm every other arm is compared with (standard augmentation).
REFERENCE_ARM = "real+aug"
#: Arms that need an unconditional generator (``model.kind: dcgan``).
GAN_ARMS = ("real+aug+synthetic", "real+aug+insert")
#: Arms that need an inpainting generator (``model.kind: inpaint``).
INPAINT_ARMS = ("real+aug+inpaint",)
#: Arms that add lesions to a share ``ratio`` of the training patches.
LESION_ARMS = ("real+aug+synthetic", "real+aug+insert", "real+aug+carvemix", "real+aug+inpaint")
#: Arms run by default (``real`` answers another question: does augmentation help at all);
#: ``real+aug+inpaint`` is added when an inpainter is given.
DEFAULT_ARMS = ("real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")


def run_name(arm: str, ratio: float | None) -> str:
    """Folder/row name of one arm at one ratio: ``real+aug`` or ``real+aug+insert@0.25``."""
    return arm if arm not in LESION_ARMS or ratio is None else f"{arm}@{ratio:g}"
