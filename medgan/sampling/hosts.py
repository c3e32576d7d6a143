"""Host scans for full-size synthetic cases: read in RAS, write back in the host's own layout.

A host is read as stored (no resampling, no intensity change): its voxel array and label are
turned into RAS axis order by flips and transposes only (so axial slices are the last axis, as in
training), and :meth:`Host.to_file_layout` undoes exactly that. Written files keep the host's
affine and header (spacing, orientation, units), carry a "synthetic" description, and are
gzip-compressed with a zero time stamp, so the same inputs give the same bytes.

A DICOM host (a series folder, with an RTSTRUCT, DICOM SEG, DICOM or NIfTI label) is read with
MONAI like training data (:func:`medgan.data.transforms.read_image`: rescaled values, e.g. HU,
and the series' geometry) and written as NIfTI with that geometry; nothing of the DICOM header
(no patient or study attribute) reaches the output.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from medgan.data.datalist import NIFTI_SUFFIXES, Case, image_files
from medgan.errors import DataError
from medgan.sampling.writer import DESCRIP_BYTES, write_bytes

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass
class Host:
    """One host case: ``image`` ``(X, Y, Z)`` and ``label`` in RAS axis order (file dtypes),
    ``spacing_mm`` (x, y, z) in that order, and the files' NIfTI images for writing back."""

    case_id: str
    image_path: Path
    label_path: Path
    image: np.ndarray
    label: np.ndarray
    spacing_mm: tuple[float, float, float]
    image_nii: nib.Nifti1Image
    label_nii: nib.Nifti1Image
    ornt: np.ndarray

    def to_file_layout(self, array: np.ndarray) -> np.ndarray:
        """A RAS-ordered ``(X, Y, Z)`` array back in the file's own axis order."""
        return apply_orientation(array, ornt_transform(_RAS, self.ornt))

    @property
    def ras_affine(self) -> np.ndarray:
        """Voxel-to-world affine ``(4, 4)`` of the RAS-ordered arrays ``image`` and ``label``."""
        shape = np.asarray(self.image_nii.shape[:3])
        return np.asarray(self.image_nii.affine) @ inv_ornt_aff(self.ornt, shape)


def _is_nifti(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def read_host(case: Case, image_channels: int = 1,
              roi_names: Sequence[str | int] = ("*GTV*",)) -> Host:
    """Read a datalist case as a :class:`Host` (one image channel, 3D, label of equal shape).

    NIfTI image + NIfTI label are read as stored; a DICOM series image (its label an RTSTRUCT,
    DICOM SEG, DICOM or NIfTI file; ``roi_names`` choose structures, unless the case names its
    own) is read with MONAI into a header-free NIfTI of the series' geometry.
    """
    files = image_files(case)
    case_id = str(case["case_id"])
    if len(files) != image_channels or image_channels != 1:
        raise DataError(f"host case {case_id!r} has {len(files)} image channel(s); full-size "
                        f"cases support single-channel hosts and checkpoints only")
    image_path, label_path = Path(files[0]), Path(case["label"])
    if not _is_nifti(image_path):
        image_nii, label_nii = _read_dicom(case, case_id, roi_names)
    elif not _is_nifti(label_path):
        raise DataError(f"{label_path}: host case {case_id!r} has a NIfTI image, so its label "
                        "must be a NIfTI file too (.nii or .nii.gz); DICOM labels need the DICOM "
                        "image series")
    else:
        try:
            image_nii, label_nii = nib.load(image_path), nib.load(label_path)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{image_path}: host case {case_id!r} cannot be read ({err})") \
                from None
    try:
        image = np.asanyarray(image_nii.dataobj)
        label = np.asanyarray(label_nii.dataobj)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{image_path}: host case {case_id!r} cannot be read ({err})") from None
    if image.ndim != 3 or label.shape != image.shape:
        raise DataError(f"{image_path}: host must be a 3D image with a label of the same shape, "
                        f"not image {image.shape} and label {label.shape}")
    ornt = io_orientation(image_nii.affine)
    zooms = np.asarray(image_nii.header.get_zooms()[:3], float)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = zooms
    return Host(case_id, image_path, label_path, apply_orientation(image, ornt),
                apply_orientation(label, ornt), tuple(float(s) for s in spacing), image_nii,
                label_nii, ornt)


def _read_dicom(case: Case, case_id: str, roi_names: Sequence[str | int]
                ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A DICOM host as two NIfTI images (float32 image in the series' units, uint8 label) with
    the series' RAS affine and no header fields from the DICOM files."""
    from medgan.data.transforms import read_image, read_label

    try:
        image = read_image(str(image_files(case)[0]))
        label, _ = read_label(case, image, roi_names)
    except DataError as err:
        raise DataError(f"host case {case_id!r}: {err.message}") from None
    if image.shape[0] != 1 or label.shape[0] != 1:
        raise DataError(f"host case {case_id!r}: DICOM host and label must have one channel, "
                        f"not {image.shape[0]} and {label.shape[0]}")
    affine = np.asarray(image.affine, dtype=np.float64)
    values = np.asarray(image[0], dtype=np.float32)
    mask = np.asarray(label[0])
    if mask.shape != values.shape:
        raise DataError(f"{case['label']}: host case {case_id!r}: label shape {mask.shape} "
                        f"differs from the image's {values.shape}")
    mask = np.rint(mask).clip(0, 255).astype(np.uint8)
    return nib.Nifti1Image(values, affine), nib.Nifti1Image(mask, affine)


def nifti_like(array: np.ndarray, template: nib.Nifti1Image, descrip: str) -> bytes:
    """Gzipped NIfTI bytes of ``array`` (file layout) with ``template``'s affine and header,
    the data type of ``array``, no intensity scaling and ``descrip``; time stamp 0."""
    header = template.header.copy()
    header.set_data_dtype(array.dtype)
    img = nib.Nifti1Image(array, template.affine, header)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = descrip[:DESCRIP_BYTES].encode("ascii", "replace")
    img.header["aux_file"] = b"medgan"
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def write_case(path_image: Path, path_label: Path, host: Host, image: np.ndarray,
               label: np.ndarray, descrip: str) -> None:
    """Write a synthetic case (RAS arrays) in the host's layout, header and affine."""
    write_bytes(path_image, nifti_like(host.to_file_layout(image), host.image_nii, descrip))
    write_bytes(path_label, nifti_like(host.to_file_layout(label), host.label_nii, descrip))
