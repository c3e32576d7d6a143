"""The sample data bundled with medgan, so the quick start runs without downloading anything.

Three soft-tissue sarcoma patients (TCIA "Soft-tissue-Sarcoma", CC BY 3.0), each with a CT,
a T1-weighted MR and an FDG-PET volume cropped around the tumour, plus the gross tumour volume
as a binary mask. Each modality is a MONAI decathlon-style folder::

    sample_data/sarcoma/<modality>/dataset.json
    sample_data/sarcoma/<modality>/imagesTr/STS_00N.nii.gz
    sample_data/sarcoma/<modality>/labelsTr/STS_00N.nii.gz

See ``sample_data/ATTRIBUTION.md`` for the source and licence and
``scripts/build_sample_data.py`` for how the files were made.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from medgan.errors import ConfigError, DataError

#: Modalities of the bundled sample, as accepted by :func:`bundled_datalist`.
BUNDLED_MODALITIES: tuple[str, ...] = ("ct", "mr", "pet")


def _package_dir() -> Path:
    """The installed ``medgan`` folder on disk."""
    return Path(str(resources.files("medgan")))


def bundled_data_dir() -> Path:
    """Folder of the bundled sarcoma sample, one sub-folder per modality."""
    folder = _package_dir() / "sample_data" / "sarcoma"
    if not folder.is_dir():
        raise DataError(
            f"{folder}: bundled sample data not found; reinstall medgan, or rebuild it with "
            "scripts/build_sample_data.py"
        )
    return folder


def bundled_datalist_path(modality: str = "ct") -> Path:
    """The decathlon-style ``dataset.json`` of one sample modality ("ct", "mr" or "pet")."""
    if modality not in BUNDLED_MODALITIES:
        choices = ", ".join(repr(name) for name in BUNDLED_MODALITIES)
        raise ConfigError(f"sample modality must be one of {choices}, not {modality!r}")
    path = bundled_data_dir() / modality / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: sample datalist not found")
    return path


def bundled_datalist(modality: str = "ct") -> list[dict[str, str]]:
    """The sample's training items as ``{"image": ..., "label": ...}`` with absolute paths."""
    from monai.data import load_decathlon_datalist

    path = bundled_datalist_path(modality)
    items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="training")
    return [{"image": str(item["image"]), "label": str(item["label"])} for item in items]


# ---- the 0.1 names ("sample" also means generating; deprecated in 0.2) ----
SAMPLE_MODALITIES = BUNDLED_MODALITIES


def _renamed(old: str, new: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"medgan.datasets.{old} is now {new.__name__}; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    wrapper.__name__ = old
    wrapper.__doc__ = f"Deprecated alias of :func:`{new.__name__}`."
    return wrapper


sample_data_dir = _renamed("sample_data_dir", bundled_data_dir)
sample_datalist_path = _renamed("sample_datalist_path", bundled_datalist_path)
sample_datalist = _renamed("sample_datalist", bundled_datalist)
