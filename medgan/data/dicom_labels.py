"""Labels stored as DICOM objects (RTSTRUCT contours, DICOM SEG) on an image series' grid.

A case whose ``label`` is an RTSTRUCT or a DICOM SEG file is read here instead of by MONAI's
``LoadImage``: the structures chosen by ``roi_names`` are rasterised (RTSTRUCT, see
:mod:`medgan.data.rtstruct`) or resampled (SEG, see :mod:`medgan.data.dicom_seg`) onto the voxel
grid of the case's image series, so the label has the image's shape and affine by construction.

Selection: ``roi_names`` entries are case-insensitive shell patterns (``"*GTV*"``) matched
against RTSTRUCT ROI names or SEG segment labels, or integers matched against ROI / segment
numbers. The label is the union of every structure that some entry matches; it is an error when
none matches. Each read returns a :class:`DicomLabelReport` that ``check-data`` prints.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medgan.errors import DataError

if TYPE_CHECKING:
    from monai.data import MetaTensor

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_KINDS = {RTSTRUCT_SOP_CLASS: "RTSTRUCT", SEG_SOP_CLASS: "SEG"}
RoiSelector = str | int


@dataclass
class SeriesInfo:
    """Identifiers of the image series a label must belong to (read from its files)."""

    folder: str
    frame_of_reference_uid: str | None
    series_instance_uid: str | None
    sop_instance_uids: set[str] = field(default_factory=set)


@dataclass
class DicomLabelReport:
    """What reading an RTSTRUCT / SEG found: structures, which were used, what was skipped."""

    path: str
    kind: str  # "RTSTRUCT" or "SEG"
    structures: list[str] = field(default_factory=list)  # every ROI / segment, "name (#n)"
    used: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # roi_names entries that matched nothing
    empty: list[str] = field(default_factory=list)  # selected structures without any contour
    n_contours: int = 0
    n_unreferenced: int = 0  # contours whose image reference is not in the series
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> contours left out
    warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def notes(self) -> list[str]:
        """One line on what was found and used (for check-data)."""
        what = "ROIs" if self.kind == "RTSTRUCT" else "segments"
        unmatched = f"; data.roi_names entries matching none: {self.unmatched}" \
            if self.unmatched else ""
        return [f"{self.path}: {self.kind} {what} found: {', '.join(self.structures) or 'none'}; "
                f"used: {', '.join(self.used) or 'none'}{unmatched}"]

    def problems(self) -> list[str]:
        """Warnings: empty structures, contours of another series, skipped contours."""
        out = list(self.warnings)
        unit = "contour" if self.kind == "RTSTRUCT" else "pixel"
        out += [f"{self.path}: {s} is empty (no {unit})" for s in self.empty]
        out += [f"{self.path}: {n} contour(s) skipped: {reason}"
                for reason, n in sorted(self.skipped.items())]
        return out


def read_dicom_file(path: str | Path, modality: str):
    """The whole DICOM dataset at ``path`` if its Modality is ``modality``; DataError else."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for broken files
        raise DataError(f"{path}: cannot be read as DICOM ({err})") from None
    if str(ds.get("Modality", "")) != modality:
        raise DataError(f"{path}: not a DICOM {modality} (Modality "
                        f"{ds.get('Modality', 'missing')})")
    return ds


def dicom_label_kind(path: str | Path) -> str | None:
    """``"RTSTRUCT"`` or ``"SEG"`` when ``path`` is such a DICOM file, else None."""
    import pydicom

    p = Path(path)
    if not p.is_file() or p.name.endswith((".nii", ".nii.gz")):
        return None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # not DICOM: the image reader names the problem
        return None
    kind = LABEL_KINDS.get(str(ds.get("SOPClassUID", "")))
    return kind or {"RTSTRUCT": "RTSTRUCT", "SEG": "SEG"}.get(str(ds.get("Modality", "")))


#: Sub-folders of a DICOM case folder searched for an RTSTRUCT / SEG label file.
LABEL_FOLDERS = ("label", "labels", "mask", "masks", "seg", "rtstruct")


def find_dicom_label(case_dir: Path, image_dir: Path) -> Path | None:
    """The one RTSTRUCT / SEG file of a DICOM case folder, or None when there is none.

    Looked for in the sub-folders :data:`LABEL_FOLDERS` and, when the series sits in
    ``image/``, in the case folder itself. A label file among the series' own files is refused
    (the series reader would take it for a slice), as are several label files.
    """
    places = [case_dir / d for d in LABEL_FOLDERS if (case_dir / d).is_dir()]
    if image_dir != case_dir:
        places.append(case_dir)
    found = [f for d in places for f in sorted(d.iterdir())
             if f.is_file() and not f.name.startswith(".") and dicom_label_kind(f)]
    if len(found) > 1:
        names = ", ".join(str(f) for f in found)
        raise DataError(f"{case_dir}: {len(found)} RTSTRUCT/SEG files ({names}); keep one per "
                        "case, or write a dataset.json that names the label")
    if found or image_dir != case_dir:
        return found[0] if found else None
    among = [f for f in sorted(case_dir.iterdir()) if f.is_file() and dicom_label_kind(f)]
    if among:
        raise DataError(f"{among[0]}: an {dicom_label_kind(among[0])} file among the image series' "
                        f"files; move it into a mask/ sub-folder of {case_dir}")
    return None


def series_info(image_path: str | Path) -> SeriesInfo:
    """Frame of Reference, series and instance UIDs of the DICOM series in ``image_path``."""
    import pydicom

    folder = Path(image_path)
    files = sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else [folder]
    tags = ["FrameOfReferenceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    fors, series, sops = set(), set(), set()
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        except Exception:  # not DICOM; the image reader already accepted the series
            continue
        fors.add(str(ds.get("FrameOfReferenceUID", "")) or None)
        series.add(str(ds.get("SeriesInstanceUID", "")) or None)
        sops.add(str(ds.get("SOPInstanceUID", "")))
    return SeriesInfo(str(folder), next(iter(fors)) if len(fors) == 1 else None,
                      next(iter(series)) if len(series) == 1 else None, sops)


def select_structures(structures: Sequence[tuple[int, str]], roi_names: Sequence[RoiSelector],
                      report: DicomLabelReport) -> list[int]:
    """Numbers of the structures ``(number, name)`` that some ``roi_names`` entry matches.

    Fills ``report.structures``, ``used`` and ``unmatched``; raises :class:`DataError` naming
    the file and the structures found when nothing matches.
    """
    report.structures = [f"{name!r} (#{num})" for num, name in structures]
    chosen: list[int] = []
    for selector in roi_names:
        hits = [num for num, name in structures if _matches(selector, num, name)]
        if not hits:
            report.unmatched.append(str(selector))
        chosen += [h for h in hits if h not in chosen]
    what = "ROI" if report.kind == "RTSTRUCT" else "segment"
    if not structures:
        raise DataError(f"{report.path}: {report.kind} holds no {what}s")
    if not chosen:
        raise DataError(
            f"{report.path}: no {what} matches data.roi_names {list(roi_names)}; {what}s "
            f"found: {', '.join(report.structures)} (set data.roi_names, or 'roi_names' in the "
            "datalist entry)")
    report.used = [f"{name!r} (#{num})" for num, name in structures if num in chosen]
    return chosen


def _matches(selector: RoiSelector, number: int, name: str) -> bool:
    if isinstance(selector, int):
        return selector == number
    return fnmatch.fnmatchcase(name.strip().lower(), str(selector).strip().lower())


def lps_affine(ras_affine: np.ndarray) -> np.ndarray:
    """A voxel -> RAS mm affine (MONAI, NIfTI) as voxel -> LPS mm (DICOM patient space)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ras_affine, dtype=np.float64)


def check_frame_of_reference(label_for: str | None, series: SeriesInfo, path: str) -> None:
    """Refuse a label whose Frame of Reference is not the image series' one."""
    if label_for and series.frame_of_reference_uid and label_for != series.frame_of_reference_uid:
        raise DataError(
            f"{path}: Frame of Reference {label_for} differs from the image series "
            f"{series.folder} ({series.frame_of_reference_uid}); the label belongs to another "
            "scan or patient position")


def one_slice_volume(image: MetaTensor, path: str | Path) -> MetaTensor:
    """A one-file DICOM series that MONAI read as 2D ``(C, X, Y)`` as a 3D ``(C, X, Y, 1)``
    MetaTensor whose affine comes from the file's geometry (slice thickness as the third axis).
    """
    import pydicom
    from monai.data import MetaTensor

    folder = Path(path)
    first = min(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else folder
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    try:
        r, c = (np.asarray(ds.ImageOrientationPatient, dtype=np.float64).reshape(2, 3))
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        origin = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    except (AttributeError, ValueError, TypeError):
        raise DataError(f"{path}: one-slice DICOM series without a complete geometry "
                        "(ImageOrientationPatient, ImagePositionPatient, PixelSpacing)") from None
    thickness = float(ds.get("SliceThickness") or ds.get("SpacingBetweenSlices") or 1.0)
    lps = np.eye(4)
    # MONAI's array: axis 0 runs along a row (columns), axis 1 down the columns (rows)
    lps[:3, 0], lps[:3, 1] = r * col_mm, c * row_mm
    lps[:3, 2], lps[:3, 3] = np.cross(r, c) * thickness, origin
    meta = {k: v for k, v in image.meta.items() if k not in ("affine", "original_affine")}
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return MetaTensor(image.as_tensor()[..., None], affine=ras, meta=meta)
