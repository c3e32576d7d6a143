"""Rasterise DICOM RTSTRUCT contours onto the voxel grid of an image series.

Each ``CLOSED_PLANAR`` contour (points in DICOM patient coordinates, mm) is mapped into voxel
index space with the image's affine. Contours are placed by their coordinates, not by the SOP
instances they reference: the Frame of Reference is what makes coordinates comparable, and it
must be the series' one. A contour lies in a plane of constant index along one voxel axis (the
slice axis for axial contours on an axial series); it fills the voxels of that slice whose
centres lie inside the polygon (scikit-image). Several contours of one ROI on a slice are
combined with exclusive-or, so a contour inside another cuts a hole, as in the DICOM standard's
description of inner contours; several ROIs are combined by union.

Contours with fewer than 3 points, of another geometric type (POINT, OPEN_PLANAR, ...), not
parallel to the series' slices or outside its slices are skipped and counted in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.draw import polygon as polygon_pixels

from medgan.data.dicom_labels import (
    DicomLabelReport,
    RoiSelector,
    SeriesInfo,
    check_frame_of_reference,
    lps_affine,
    read_dicom_file,
    select_structures,
)
from medgan.errors import DataError

#: A contour whose index along its slice axis varies by more than this is not in one slice.
PLANE_TOL_VOXELS = 0.1
#: Contours further than this from the nearest slice centre are reported (still placed).
OFF_SLICE_WARN_VOXELS = 0.25


def read_rtstruct(path: str | Path):
    """The RTSTRUCT dataset at ``path``; :class:`DataError` when it is not one."""
    ds = read_dicom_file(path, "RTSTRUCT")
    if "StructureSetROISequence" not in ds:
        raise DataError(f"{path}: not a DICOM RTSTRUCT (no Structure Set ROI Sequence)")
    return ds


def _roi_frames(ds) -> dict[int, str | None]:
    return {int(r.ROINumber): (str(r.get("ReferencedFrameOfReferenceUID", "")) or None)
            for r in ds.StructureSetROISequence}


def _check_reference(ds, series: SeriesInfo, report: DicomLabelReport) -> None:
    """Frame of Reference must match; another referenced series is only a warning."""
    frames = {f for f in _roi_frames(ds).values() if f}
    for item in ds.get("ReferencedFrameOfReferenceSequence", []):
        if item.get("FrameOfReferenceUID"):
            frames.add(str(item.FrameOfReferenceUID))
    for uid in sorted(frames):
        check_frame_of_reference(uid, series, report.path)
    referenced = {str(s.SeriesInstanceUID)
                  for f in ds.get("ReferencedFrameOfReferenceSequence", [])
                  for st in f.get("RTReferencedStudySequence", [])
                  for s in st.get("RTReferencedSeriesSequence", []) if "SeriesInstanceUID" in s}
    if referenced and series.series_instance_uid and series.series_instance_uid not in referenced:
        report.warnings.append(
            f"{report.path}: references series {', '.join(sorted(referenced))}, not the image "
            f"series {series.folder} ({series.series_instance_uid}); the Frame of Reference is "
            "the same, so contours are placed by their coordinates")


def rasterise_rtstruct(
    path: str | Path, affine: np.ndarray, shape: Sequence[int], series: SeriesInfo,
    roi_names: Sequence[RoiSelector],
) -> tuple[np.ndarray, DicomLabelReport]:
    """The union of the selected ROIs as a uint8 mask of ``shape`` ``(X, Y, Z)``.

    Args:
        path: the RTSTRUCT file.
        affine: voxel index -> RAS mm affine of the image (MONAI's, 4 x 4).
        shape: spatial shape of the image.
        series: identifiers of the image series (Frame of Reference checked).
        roi_names: selectors, see :mod:`medgan.data.dicom_labels`.
    """
    ds = read_rtstruct(path)
    report = DicomLabelReport(str(path), "RTSTRUCT")
    _check_reference(ds, series, report)
    names = [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.StructureSetROISequence]
    contours = {int(c.ReferencedROINumber): list(c.get("ContourSequence", []))
                for c in ds.get("ROIContourSequence", [])}
    chosen = select_structures(names, roi_names, report)
    report.structures = [s + (" empty" if not contours.get(num) else "")
                         for s, (num, _) in zip(report.structures, names, strict=True)]
    to_index = np.linalg.inv(lps_affine(affine))
    mask = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    off_slice = 0.0
    for number in chosen:
        items = contours.get(number, [])
        if not items:
            report.empty.append(f"ROI {dict(names)[number]!r} (#{number})")
            continue
        roi = np.zeros_like(mask)
        for item in items:
            report.n_contours += 1
            refs = [str(r.ReferencedSOPInstanceUID) for r in item.get("ContourImageSequence", [])]
            if refs and not set(refs) & series.sop_instance_uids:
                report.n_unreferenced += 1
            placed = _place_contour(item, to_index, roi.shape, report)
            if placed is None:
                continue
            axis, index, rows, cols, distance = placed
            off_slice = max(off_slice, distance)
            _xor_polygon(roi, axis, index, rows, cols)
        mask |= roi
    if off_slice > OFF_SLICE_WARN_VOXELS:
        report.warnings.append(f"{path}: contours lie up to {off_slice:.2f} slice(s) away from "
                               "the nearest slice of the series; placed on the nearest one")
    if report.n_unreferenced and not any("references series" in w for w in report.warnings):
        report.warnings.append(f"{path}: {report.n_unreferenced} contour(s) reference images "
                               f"that are not in the series {series.folder}")
    return mask.astype(np.uint8), report


def _place_contour(item, to_index: np.ndarray, shape: tuple[int, ...],
                   report: DicomLabelReport
                   ) -> tuple[int, int, np.ndarray, np.ndarray, float] | None:
    """``(slice axis, slice index, in-plane coords a, b, distance to slice)`` or None (skip)."""
    kind = str(item.get("ContourGeometricType", "CLOSED_PLANAR"))
    if kind != "CLOSED_PLANAR":
        report.skip(f"geometric type {kind} (only CLOSED_PLANAR contours enclose a region)")
        return None
    data = np.asarray(item.get("ContourData", []), dtype=np.float64)
    if data.size % 3:
        report.skip("ContourData is not a list of (x, y, z) triplets")
        return None
    points = data.reshape(-1, 3)
    if len(points) < 3:
        report.skip("fewer than 3 points")
        return None
    ijk = (to_index @ np.c_[points, np.ones(len(points))].T)[:3]  # (3, N) voxel indices
    spread = np.ptp(ijk, axis=1)
    axis = int(np.argmin(spread))
    if spread[axis] > PLANE_TOL_VOXELS:
        report.skip("not parallel to the slices of the series")
        return None
    position = float(ijk[axis].mean())
    index = int(np.floor(position + 0.5))
    if not 0 <= index < shape[axis]:
        report.skip("outside the slices of the series")
        return None
    a, b = (ijk[k] for k in range(3) if k != axis)
    return axis, index, a, b, abs(position - index)


def _xor_polygon(mask: np.ndarray, axis: int, index: int, a: np.ndarray, b: np.ndarray) -> None:
    """Toggle the voxels of slice ``index`` along ``axis`` whose centres are inside (a, b)."""
    plane = np.take(mask, index, axis=axis)
    rr, cc = polygon_pixels(a, b, shape=plane.shape)
    fill = np.zeros(plane.shape, dtype=bool)
    fill[rr, cc] = True
    slicer: list[slice | int] = [slice(None)] * 3
    slicer[axis] = index
    mask[tuple(slicer)] = plane ^ fill
