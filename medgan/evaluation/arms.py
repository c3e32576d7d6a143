"""The arms of the segmentation benchmark, defined once (torch-free: the CLI lists them)."""

from __future__ import annotations

#: Every arm, in report order.
ARMS: tuple[str, ...] = ("real", "real+aug", "real+aug+synthetic", "real+aug+insert",
                         "real+aug+carvemix")
#: Arms that need a generator checkpoint.
GAN_ARMS: tuple[str, ...] = ("real+aug+synthetic", "real+aug+insert")
