"""Read a DICOM SEG (binary or fractional) onto the voxel grid of an image series.

The SEG is read with highdicom, which stacks its frames into a regularly spaced volume with an
affine in patient coordinates (missing frames are empty). That volume is sampled at the centre
of every image voxel (nearest neighbour), so a SEG made on the series' own grid comes back voxel
for voxel, and one on another grid of the same Frame of Reference is resampled. Fractional
segments (probability or occupancy) count as lesion where their value is at least 0.5. The
selected segments are combined by union.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import affine_transform

from medgan.data.dicom_labels import (
    DicomLabelReport,
    check_frame_of_reference,
    lps_affine,
    read_dicom_file,
    select_structures,
)
from medgan.errors import DataError

if TYPE_CHECKING:
    from medgan.data.dicom_labels import RoiSelector, SeriesInfo

FRACTIONAL_THRESHOLD = 0.5


def read_seg(path: str | Path):
    """The DICOM SEG at ``path`` as a highdicom ``Segmentation``; DataError when unusable."""
    import highdicom as hd

    ds = read_dicom_file(path, "SEG")
    if not ds.get("SegmentSequence"):
        raise DataError(f"{path}: DICOM SEG holds no segments (empty Segment Sequence)")
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as err:  # highdicom validates many attributes, each with its own error
        raise DataError(f"{path}: DICOM SEG cannot be decoded ({err})") from None


def resample_seg(
    path: str | Path, affine: np.ndarray, shape: Sequence[int], series: SeriesInfo,
    roi_names: Sequence[RoiSelector],
) -> tuple[np.ndarray, DicomLabelReport]:
    """The union of the selected segments of the SEG at ``path`` as a uint8 mask on the image
    grid (``affine``, ``shape`` ``(X, Y, Z)``), as
    :func:`~medgan.data.rtstruct.rasterise_rtstruct` does for contours; ``roi_names`` match
    segment labels or numbers, and the Frame of Reference of ``series`` must be the SEG's."""
    seg = read_seg(path)
    report = DicomLabelReport(str(path), "SEG")
    check_frame_of_reference(str(seg.get("FrameOfReferenceUID", "")) or None, series, str(path))
    segments = [(int(s.SegmentNumber), str(s.get("SegmentLabel", "")))
                for s in seg.SegmentSequence]
    chosen = select_structures(segments, roi_names, report)
    try:
        volume = seg.get_volume(segment_numbers=chosen, combine_segments=False,
                                rescale_fractional=True)
    except Exception as err:  # highdicom: frames not a regular volume, missing geometry, ...
        raise DataError(f"{path}: DICOM SEG frames do not form a regular 3D volume ({err})") \
            from None
    array = np.asarray(volume.array, dtype=np.float32)  # (slices, rows, cols, segments)
    array = array.reshape(*array.shape[:3], -1)
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    to_seg = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64)) @ lps_affine(affine)
    out_shape = tuple(int(s) for s in shape)
    mask = np.zeros(out_shape, dtype=bool)
    numbers = dict(segments)
    for k, number in enumerate(chosen):
        # one voxel of zeros around the SEG and mode "nearest": a voxel centre up to half a
        # voxel outside the SEG's first/last slice (rounding of positions) still finds it
        values = affine_transform(np.pad(array[..., k], 1), to_seg[:3, :3],
                                  offset=to_seg[:3, 3] + 1.0, output_shape=out_shape, order=0,
                                  mode="nearest")
        present = values >= FRACTIONAL_THRESHOLD if fractional else values > 0
        if not array[..., k].any():
            report.empty.append(f"segment {numbers[number]!r} (#{number})")
        mask |= present
    if array.any() and not mask.any():
        report.warnings.append(f"{path}: the segments lie outside the image series "
                               f"{series.folder}")
    return mask.astype(np.uint8), report
