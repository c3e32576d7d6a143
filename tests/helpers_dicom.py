"""Small DICOM label objects for tests: an RTSTRUCT (pydicom) and a DICOM SEG (highdicom) on a
phantom series written by :func:`helpers_data.write_dicom_series`.

Contours are given in voxel index coordinates of the phantom volume ``(i, j)`` on slice ``k``
and converted to DICOM patient coordinates (LPS mm) with the volume's RAS affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from helpers_data import new_dicom_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def read_series(folder: Path) -> list[Dataset]:
    """The series' datasets sorted by InstanceNumber."""
    datasets = [pydicom.dcmread(f) for f in sorted(folder.iterdir()) if f.is_file()]
    return sorted(datasets, key=lambda d: int(d.InstanceNumber))


def to_lps(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """``(N, 3)`` voxel indices -> ``(N, 3)`` LPS mm for a RAS ``affine``."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return (lps @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T


def square(i0: float, i1: float, j0: float, j1: float, k: float) -> np.ndarray:
    """A square contour (voxel indices) on slice ``k``."""
    return np.array([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k]], dtype=float)


def write_rtstruct(path: Path, series: Path, affine: np.ndarray,
                   rois: dict[str, Sequence[np.ndarray]], frame_uid: str | None = None,
                   series_uid: str | None = None, geometric_type: str = "CLOSED_PLANAR",
                   reference_images: bool = True) -> Path:
    """An RTSTRUCT at ``path`` with one ROI per ``rois`` item (contours in voxel indices).

    ``frame_uid`` / ``series_uid`` default to the series' own; a ROI with no contour is written
    without a Contour Sequence.
    """
    slices = read_series(series)
    first = slices[0]
    frame_uid = frame_uid or str(first.FrameOfReferenceUID)
    ds = new_dicom_dataset(RTSTRUCT_SOP_CLASS)
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTSTRUCT", first.StudyInstanceUID, \
        generate_uid()
    ds.StructureSetLabel = "test"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid or first.SeriesInstanceUID
    ref_series.ContourImageSequence = DicomSequence([_image_ref(s) for s in slices])
    ref_study = Dataset()
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame_uid
    ref_frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref_frame])
    rois_seq, contours_seq = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        rois_seq.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        if contours:
            item.ContourSequence = DicomSequence(
                [_contour(c, affine, slices, geometric_type, reference_images) for c in contours])
        contours_seq.append(item)
    ds.StructureSetROISequence = DicomSequence(rois_seq)
    ds.ROIContourSequence = DicomSequence(contours_seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _image_ref(slice_ds: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = slice_ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = slice_ds.SOPInstanceUID
    return ref


def _contour(ijk: np.ndarray, affine: np.ndarray, slices: list[Dataset], geometric_type: str,
             reference_images: bool) -> Dataset:
    points = to_lps(affine, np.asarray(ijk, dtype=float))
    item = Dataset()
    item.ContourGeometricType = geometric_type
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.6g}" for v in points.ravel()]
    k = int(round(float(np.asarray(ijk)[0, 2])))
    if reference_images and 0 <= k < len(slices):
        item.ContourImageSequence = DicomSequence([_image_ref(slices[k])])
    return item


def write_seg(path: Path, series: Path, mask: np.ndarray, labels: Sequence[str] = ("tumour",),
              fractional: bool = False) -> Path:
    """A DICOM SEG of ``mask`` ``(X, Y, Z)`` (or ``(S, X, Y, Z)`` for several segments) on the
    series; fractional values in [0, 1] with ``fractional``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    slices = read_series(series)
    for ds in slices:  # type 2 attributes that highdicom copies from the source images
        for keyword in ("PatientSex", "PatientBirthDate", "StudyID", "StudyTime",
                        "AccessionNumber", "ReferringPhysicianName", "StudyDate"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    masks = np.asarray(mask)[None] if np.ndim(mask) == 3 else np.asarray(mask)
    frames = np.stack([m.transpose(2, 1, 0) for m in masks], axis=-1)  # (Z, rows, cols, S)
    frames = frames.astype(np.float32) if fractional else frames.astype(np.uint8)
    segments = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type="MANUAL")
        for n, label in enumerate(labels, start=1)]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=frames,
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=segments, series_instance_uid=generate_uid(), series_number=5,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tests",
        manufacturer_model_name="tests", software_versions="0", device_serial_number="0")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
