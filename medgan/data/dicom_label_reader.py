"""Read a case's DICOM label, RTSTRUCT or SEG, onto its image series' grid.

The two formats have their own readers (:mod:`.rtstruct`, :mod:`.dicom_seg`), built on the
shared helpers of :mod:`.dicom_labels`; this module picks one by the file's SOP class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medgan.data.dicom_labels import (
    DicomLabelReport,
    RoiSelector,
    dicom_label_kind,
    series_info,
)
from medgan.data.dicom_seg import resample_seg
from medgan.data.rtstruct import rasterise_rtstruct
from medgan.errors import DataError


def read_dicom_label(label_path: str | Path, image: MetaTensor, image_path: str | Path,
                     roi_names: Sequence[RoiSelector]) -> tuple[MetaTensor, DicomLabelReport]:
    """Read an RTSTRUCT / SEG label onto ``image``'s grid.

    Args:
        label_path: the RTSTRUCT or SEG file.
        image: the case's image, a MONAI ``MetaTensor`` ``(C, X, Y, Z)`` with its RAS affine.
        image_path: the DICOM series folder the image was read from.
        roi_names: selectors, see the module docstring.

    Returns:
        The label, a uint8 ``MetaTensor`` ``(1, X, Y, Z)`` with the image's affine and
        metadata, and the :class:`DicomLabelReport`.
    """
    kind = dicom_label_kind(label_path)
    if kind is None:
        raise DataError(f"{label_path}: not a DICOM RTSTRUCT or SEG")
    if not Path(image_path).is_dir() and dicom_label_kind(image_path) is None \
            and Path(image_path).name.endswith((".nii", ".nii.gz")):
        raise DataError(f"{label_path}: an {kind} label needs its image as a DICOM series, not "
                        f"the NIfTI file {image_path} (whose Frame of Reference is unknown)")
    series = series_info(image_path)
    reader = rasterise_rtstruct if kind == "RTSTRUCT" else resample_seg
    mask, report = reader(label_path, np.asarray(image.affine), tuple(image.shape[1:]), series,
                          list(roi_names))
    meta = {k: v for k, v in image.meta.items()  # no DICOM tags; the affine is passed below
            if not str(k)[:1].isdigit() and k != "affine"}
    meta["filename_or_obj"] = str(label_path)
    return MetaTensor(mask[None], affine=image.affine.clone(), meta=meta), report
