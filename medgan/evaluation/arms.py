"""Names of the segmentation benchmark's arms, defined once (imports nothing heavy: the CLI
uses them for its option choices and must stay fast to start)."""

from __future__ import annotations

#: Every arm, in report order.
ARMS = ("real", "real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")
#: The arm every other arm is compared with (standard augmentation).
REFERENCE_ARM = "real+aug"
#: Arms that need a generator.
GAN_ARMS = ("real+aug+synthetic", "real+aug+insert")
#: Arms that add lesions to a share ``ratio`` of the training patches.
LESION_ARMS = ("real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")
#: Arms run by default (``real`` answers another question: does augmentation help at all).
DEFAULT_ARMS = ("real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")


def run_name(arm: str, ratio: float | None) -> str:
    """Folder/row name of one arm at one ratio: ``real+aug`` or ``real+aug+insert@0.25``."""
    return arm if arm not in LESION_ARMS or ratio is None else f"{arm}@{ratio:g}"
