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

from importlib import resources
from pathlib import Path

from medgan.errors import ConfigError, DataError

#: Modalities of the bundled sample, as accepted by :func:`sample_datalist`.
SAMPLE_MODALITIES: tuple[str, ...] = ("ct", "mr", "pet")


def _package_dir() -> Path:
    """The installed ``medgan`` folder on disk."""
    return Path(str(resources.files("medgan")))


def sample_data_dir() -> Path:
    """Folder of the bundled sarcoma sample, one sub-folder per modality."""
    folder = _package_dir() / "sample_data" / "sarcoma"
    if not folder.is_dir():
        raise DataError(
            f"{folder}: bundled sample data not found; reinstall medgan, or rebuild it with "
            "scripts/build_sample_data.py"
        )
    return folder


def sample_datalist_path(modality: str = "ct") -> Path:
    """The decathlon-style ``dataset.json`` of one sample modality ("ct", "mr" or "pet")."""
    if modality not in SAMPLE_MODALITIES:
        choices = ", ".join(repr(name) for name in SAMPLE_MODALITIES)
        raise ConfigError(f"sample modality must be one of {choices}, not {modality!r}")
    path = sample_data_dir() / modality / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: sample datalist not found")
    return path


def sample_datalist(modality: str = "ct") -> list[dict[str, str]]:
    """The sample's training items as ``{"image": ..., "label": ...}`` with absolute paths."""
    from monai.data import load_decathlon_datalist

    path = sample_datalist_path(modality)
    items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="training")
    return [{"image": str(item["image"]), "label": str(item["label"])} for item in items]
