"""Data layer: datalists, MONAI loading/normalisation chains, patch extraction and caching."""

from medgan.data.check import DatasetReport, check_dataset, format_report
from medgan.data.datalist import load_datalist
from medgan.data.intensity import IntensityMapping, NormalizeModality, NormalizeModalityd
from medgan.data.patch_bank import PatchBank, build_patch_bank
from medgan.data.patches import extract_patches
from medgan.data.transforms import LesionMask, LesionMaskd, build_case_transforms, load_case

__all__ = [
    "DatasetReport", "IntensityMapping", "LesionMask", "LesionMaskd", "NormalizeModality",
    "NormalizeModalityd", "PatchBank", "build_case_transforms", "build_patch_bank",
    "check_dataset", "extract_patches", "format_report", "load_case", "load_datalist",
]
