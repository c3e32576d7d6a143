"""Data layer: datalists, MONAI loading/normalisation chains, patch extraction and caching.

Names are exported lazily (see :mod:`medgan._lazy`): the CLI reads datalists to validate
``--data`` before torch and MONAI load.
"""

from medgan._lazy import lazy_getattr

_EXPORTS = {
    "DatasetReport": "medgan.data.check", "check_dataset": "medgan.data.check",
    "format_report": "medgan.data.check", "load_datalist": "medgan.data.datalist",
    "IntensityMapping": "medgan.data.intensity", "NormalizeModality": "medgan.data.intensity",
    "NormalizeModalityd": "medgan.data.intensity", "PatchBank": "medgan.data.patch_bank",
    "build_patch_bank": "medgan.data.patch_bank", "extract_patches": "medgan.data.patches",
    "LesionMask": "medgan.data.transforms", "LesionMaskd": "medgan.data.transforms",
    "build_case_transforms": "medgan.data.transforms", "load_case": "medgan.data.transforms",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
