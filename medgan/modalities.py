"""The one table of modality names: config keys, display names, DICOM and decathlon codes.

medgan's modalities are the config keys ``ct``, ``mr``, ``pet`` and ``none``. Files name them
in other ways: DICOM ``Modality`` codes (``CT``, ``MR``, ``PT``), decathlon ``modality``
entries (``"T1w"``, ``"FLAIR"``, ``"CT"``) and the names medgan itself writes into synthetic
datalists (``"CT"``, ``"MR"``, ``"PET"``, ``"image"``).
"""

from __future__ import annotations

import re

#: config key -> the name medgan writes for it (datalists, reports).
DISPLAY_NAMES: dict[str, str] = {"ct": "CT", "mr": "MR", "pet": "PET", "none": "image"}
_MR_CODES = ("MR", "MRI", "T1", "T2", "FLAIR", "ADC", "DWI", "PD", "SWI", "DCE", "DSC", "MPRAGE")
#: DICOM Modality codes and common decathlon names (upper case) -> config key.
_CODES: dict[str, str] = {"CT": "ct", "PT": "pet", "PET": "pet", "IMAGE": "none",
                          **{code: "mr" for code in _MR_CODES}}


def display_name(modality: str) -> str:
    """``"pet"`` -> ``"PET"``: the name medgan writes for a config modality."""
    return DISPLAY_NAMES[modality]


def modality_of_name(name: str) -> str | None:
    """``"T1w"`` -> ``"mr"``, ``"CT"`` -> ``"ct"``, ``"PT"`` -> ``"pet"``, ``"image"`` ->
    ``"none"``; None when the name is not recognised."""
    key = name.strip().upper()
    if key in _CODES:
        return _CODES[key]
    if re.match(r"^(T1|T2)(W|GD|C|CE|-?GAD)?$", key):  # T1w, t1gd, T2w ... (decathlon)
        return "mr"
    if key.startswith(("FDG", "PET")):
        return "pet"
    return None
