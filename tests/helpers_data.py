"""Test data helpers: small synthetic phantoms written as NIfTI/DICOM, datalists and configs.

A phantom is a body-like ellipsoid with a spherical lesion, in the physical units of its
modality (CT in HU, MR on an arbitrary 0..1500 scale with zero background, PET in SUV). Volumes
are small (default 48x48x12) so that every data-layer test stays fast on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: Physical intensities per modality: (background, body, lesion, noise sd, clip range).
MODALITY_VALUES: dict[str, dict[str, Any]] = {
    "ct": {"background": -1000.0, "body": 40.0, "lesion": 80.0, "noise": 10.0,
           "clip": (-1024.0, 3071.0)},
    "mr": {"background": 0.0, "body": 600.0, "lesion": 1200.0, "noise": 40.0,
           "clip": (0.0, 1500.0)},
    "pet": {"background": 0.0, "body": 1.0, "lesion": 12.0, "noise": 0.2, "clip": (0.0, 15.0)},
}


@dataclass
class Phantom:
    """One written case: file paths, the arrays as written and where the lesion is."""

    image: Path | list[Path]
    label: Path
    image_array: np.ndarray  # (X, Y, Z) or (C, X, Y, Z) in physical units
    label_array: np.ndarray  # (X, Y, Z) integer labels
    affine: np.ndarray
    lesion_center: tuple[int, int, int]  # voxel index in the written array

    @property
    def case(self) -> dict[str, Any]:
        """The datalist entry of this case (absolute paths, case id = file stem)."""
        image = [str(p) for p in self.image] if isinstance(self.image, list) else str(self.image)
        return {"image": image, "label": str(self.label), "case_id": self.label.name[:-7]}


def phantom_arrays(
    shape: tuple[int, int, int] = (48, 48, 12), modality: str = "ct", channels: int = 1,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), lesion_radius_mm: float = 6.0,
    lesion_center: tuple[int, int, int] | None = None, lesion_value: int = 1, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Image ``(X, Y, Z)`` (or ``(C, X, Y, Z)`` when ``channels > 1``) and integer label."""
    values = MODALITY_VALUES[modality]
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    mm = [g * s for g, s in zip(grid, spacing, strict=True)]
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    body = sum(((x - e / 2) / (0.42 * e)) ** 2 for x, e in zip(mm, extent, strict=True)) <= 1.0
    if lesion_center is None:
        lesion_center = (shape[0] // 2 + shape[0] // 8, shape[1] // 2, shape[2] // 2)
    centre_mm = [c * s for c, s in zip(lesion_center, spacing, strict=True)]
    dist2 = sum((x - c) ** 2 for x, c in zip(mm, centre_mm, strict=True))
    lesion = (dist2 <= lesion_radius_mm**2) & body
    label = np.where(lesion, lesion_value, 0).astype(np.uint8)
    chans = []
    for c in range(channels):
        scale = 1.0 + 0.25 * c  # channels differ (e.g. FLAIR vs T1c)
        img = np.full(shape, values["background"], np.float32)
        img[body] = values["body"] * scale
        img[lesion] = values["lesion"] * scale
        img[body] += rng.normal(0.0, values["noise"], int(body.sum())).astype(np.float32)
        chans.append(np.clip(img, *values["clip"]).astype(np.float32))
    image = chans[0] if channels == 1 else np.stack(chans)
    return image, label, lesion_center


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype: Any = None) -> Path:
    """Write ``array`` (spatial axes first) as NIfTI, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array if dtype is None else array.astype(dtype)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def spacing_affine(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A RAS affine with the given voxel spacing and a non-zero origin."""
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    affine[:3, 3] = (-20.0, -30.0, 10.0)
    return affine


#: Patient identifiers written into every synthetic DICOM file (must never reach an output).
DICOM_PATIENT = {"PatientName": "Phantom^Pat", "PatientID": "PHANTOM-0001",
                 "PatientBirthDate": "19700101", "InstitutionName": "Phantom General Hospital",
                 "StudyDate": "20240229", "AccessionNumber": "ACC-PHANTOM-77",
                 "ReferringPhysicianName": "Referrer^Phantom"}


def new_dicom_dataset(sop_class: str) -> Any:
    """An empty DICOM dataset of ``sop_class`` with file meta and a new SOP Instance UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    return ds


def write_dicom_series(folder: Path, volume: np.ndarray, affine: np.ndarray,
                       identifiers: dict[str, str] | None = None) -> Path:
    """Write a CT volume ``(X, Y, Z)`` in HU as a minimal DICOM series, one file per slice.

    The geometry is the NIfTI ``affine`` (RAS) expressed in DICOM's LPS patient space: columns
    run along voxel axis 0, rows along axis 1 and slices along axis 2. Pixels are stored as
    ``uint16`` with ``RescaleIntercept -1024``. ``identifiers`` (default
    :data:`DICOM_PATIENT`) are written into every file, next to fresh study, series and
    instance UIDs.
    """
    from pydicom.uid import CTImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        ds = new_dicom_dataset(CTImageStorage)
        for key, value in (identifiers or DICOM_PATIENT).items():
            setattr(ds, key, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", k + 1
        ds.ImagePositionPatient = [float(x) for x in (lps @ [0.0, 0.0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [float(x) for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # (between rows, between columns)
        ds.SliceThickness = float(spacing[2])
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        pixels = (np.round(volume[:, :, k]).T + 1024).astype(np.uint16)  # (rows, columns)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)
    return folder


def write_datalist(path: Path, phantoms: list[Phantom], key: str = "training") -> Path:
    """A decathlon ``dataset.json`` at ``path`` with paths relative to its folder."""

    def rel(p: Path) -> str:
        return str(Path(p).relative_to(path.parent))

    entries = [
        {"image": [rel(i) for i in p.image] if isinstance(p.image, list) else rel(p.image),
         "label": rel(p.label)}
        for p in phantoms
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": "phantoms", key: entries}, indent=1), encoding="utf-8")
    return path


def config_dict(modality: str = "ct", spatial_dims: int = 2, **data: Any) -> dict[str, Any]:
    """A small valid config (patch 32, native spacing) with ``data`` overrides."""
    return {
        "modality": modality,
        "spatial_dims": spatial_dims,
        "data": {"patch_size": 32, "lesion_labels": [1], "patches_per_case": 8,
                 "min_lesion_voxels": 5, **data},
        "model": {"latent_dim": 8, "ngf": 8, "ndf": 8},
        "train": {"steps": 1, "batch_size": 4, "log_every": 1, "sample_every": 1,
                  "checkpoint_every": 1, "ema_decay": None},
    }
