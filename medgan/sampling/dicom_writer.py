"""Write a synthetic image + mask as a DICOM series and a DICOM SEG (``medgan sample --format
dicom``).

* One file per slice of CT, MR or PET Image Storage, with new Study, Series, Frame of Reference
  and SOP Instance UIDs made for each call (never taken from any source) and a made-up patient
  (``SYNTHETIC^MEDGAN``, an ID derived from the new study UID); no date is written.
* Synthetic and traceable: ImageType ``DERIVED\\SECONDARY``, SeriesDescription and
  ImageComments name medgan and the checkpoint, DerivationDescription says no patient is behind
  the image.
* Intensities: CT as signed 16-bit Hounsfield units (RescaleSlope 1, RescaleIntercept 0,
  RescaleType HU); PET (SUV, Units GML) and MR as unsigned 16-bit with one RescaleSlope /
  RescaleIntercept for the series, chosen so that the whole value range fits (quantisation error
  at most half a slope).
* Geometry: the volume's RAS affine in DICOM's LPS patient space; in-plane axes are flipped where
  needed so that rows and columns run along +x / +y of the patient as viewers expect.
* The mask becomes a binary DICOM SEG (highdicom) on that series, one segment "lesion" whose
  algorithm identification names medgan, its version and the checkpoint.

Every file is written through :mod:`medgan.atomic` (or, in a staging folder, created new).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgan._version import __version__
from medgan.errors import ConfigError
from medgan.sampling.output import SEGMENT_LABEL
from medgan.sampling.writer import write_bytes, write_bytes_atomic

SOP_CLASSES = {"ct": "1.2.840.10008.5.1.4.1.1.2", "mr": "1.2.840.10008.5.1.4.1.1.4",
               "pet": "1.2.840.10008.5.1.4.1.1.128"}
DICOM_MODALITY = {"ct": "CT", "mr": "MR", "pet": "PT"}
LESION_CODE = ("52988006", "SCT", "Lesion")


@dataclass(frozen=True)
class SyntheticSource:
    """What made a synthetic case, written into its DICOM headers."""

    checkpoint_sha256: str
    seed: int
    index: int

    @property
    def tag(self) -> str:
        """``medgan ckpt=1a2b3c4d5e6f seed=7 idx=0`` (short, fits a 64-character LO)."""
        return f"ckpt={self.checkpoint_sha256[:12]} seed={self.seed} idx={self.index}"


def new_uid() -> str:
    """A new, random DICOM UID (``2.25.<128-bit UUID>``)."""
    return f"2.25.{uuid.uuid4().int}"


def _canonical(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip axes 0 / 1 so that they run towards +x / +y in LPS (patient left, posterior)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    for axis in (0, 1):
        direction = lps[:3, axis]
        if direction[int(np.argmax(np.abs(direction)))] < 0:
            flip = np.eye(4)
            flip[axis, axis], flip[axis, 3] = -1.0, volume.shape[axis] - 1
            volume, lps = np.flip(volume, axis), lps @ flip
    return np.ascontiguousarray(volume), lps


def _encode(volume: np.ndarray, modality: str) -> tuple[np.ndarray, float, float]:
    """Stored pixel values, RescaleSlope, RescaleIntercept for physical ``volume``."""
    if modality == "ct":
        return np.clip(np.round(volume), -32768, 32767).astype(np.int16), 1.0, 0.0
    low = min(float(volume.min()), 0.0)
    span = float(volume.max()) - low
    slope = span / 65535.0 if span > 0 else 1.0
    slope = float(f"{slope:.10g}")  # as written into the DS string, so encoding matches it
    stored = np.clip(np.round((volume - low) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, float(f"{low:.10g}")


def _ds_number(value: float) -> str:
    return f"{value:.10g}"


def series_datasets(volume: np.ndarray, affine: np.ndarray, modality: str,
                    source: SyntheticSource, study: str | None = None,
                    frame: str | None = None, series_number: int = 1) -> list:
    """One pydicom Dataset per slice for ``volume`` ``(X, Y, Z)`` in physical units.

    Args:
        volume: float image, voxel axes as in ``affine``.
        affine: voxel index -> RAS mm (4 x 4), as MONAI / NIfTI.
        modality: ``"ct"``, ``"mr"`` or ``"pet"``.
        source: checkpoint / seed / index recorded in the headers.
        study: Study Instance UID shared with the case's other series (new when None).
        frame: Frame of Reference UID shared likewise (new when None).
        series_number: SeriesNumber of this series.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if modality not in SOP_CLASSES:
        raise ConfigError(f"format 'dicom' needs a ct, mr or pet checkpoint, not modality "
                          f"{modality!r}")
    volume, lps = _canonical(np.asarray(volume, dtype=np.float32), affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    stored, slope, intercept = _encode(volume, modality)
    header = _common_header(modality, source, study or new_uid(), new_uid(), frame or new_uid())
    header.SeriesNumber = series_number
    datasets = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.update(header)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(x) for x in (lps @ [0.0, 0.0, k, 1.0])[:3]]
        ds.ImageOrientationPatient = [_ds_number(x) for x in
                                      (*(lps[:3, 0] / spacing[0]), *(lps[:3, 1] / spacing[1]))]
        ds.PixelSpacing = [_ds_number(spacing[1]), _ds_number(spacing[0])]  # rows, columns
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds_number(spacing[2])
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(intercept)
        pixels = stored[:, :, k].T  # (rows, columns)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        datasets.append(ds)
    return datasets


def _common_header(modality: str, source: SyntheticSource, study: str, series: str,
                   frame: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID = "SYNTHETIC^MEDGAN", f"MEDGAN-{study[-12:]}"
    ds.PatientBirthDate = ds.PatientSex = ds.StudyDate = ds.StudyTime = ""
    ds.ReferringPhysicianName = ds.AccessionNumber = ds.StudyID = ""
    ds.PositionReferenceIndicator = ""
    ds.Modality, ds.SeriesNumber = DICOM_MODALITY[modality], 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = f"SYNTHETIC medgan {source.tag}"[:64]
    ds.StudyDescription = "SYNTHETIC medgan lesion"
    ds.ImageComments = (f"Synthetic image generated by medgan {__version__} from checkpoint "
                        f"{source.checkpoint_sha256} (seed {source.seed}, sample {source.index}); "
                        "not patient data")
    ds.DerivationDescription = "Generated by a GAN (medgan); no patient was imaged"
    ds.Manufacturer = ds.ManufacturerModelName = "medgan"
    ds.SoftwareVersions = __version__
    ds.BurnedInAnnotation = "NO"
    if modality == "ct":
        ds.RescaleType = "HU"
        ds.KVP = ""
    elif modality == "pet":
        ds.Units, ds.CountsSource, ds.DecayCorrection = "GML", "EMISSION", "NONE"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["DECY", "ATTN"]
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "3D"
        ds.ScanOptions = ds.EchoTime = ds.RepetitionTime = ""
    return ds


def seg_dataset(series: Sequence, mask: np.ndarray, affine: np.ndarray,
                source: SyntheticSource):
    """A binary DICOM SEG of ``mask`` ``(X, Y, Z)`` on ``series`` (from :func:`series_datasets`
    for a volume with the same ``affine``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    frames, _ = _canonical((np.asarray(mask) > 0).astype(np.uint8), affine)
    frames = np.ascontiguousarray(frames.transpose(2, 1, 0))  # (slices, rows, columns)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medgan synthetic lesion generator", version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"checkpoint_sha256": source.checkpoint_sha256, "seed": str(source.seed),
                    "sample": str(source.index)})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=Code(*LESION_CODE), algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=list(series), pixel_array=frames, segmentation_type="BINARY",
        segment_descriptions=[segment], series_instance_uid=new_uid(),
        series_number=int(series[0].SeriesNumber) + 100,
        sop_instance_uid=new_uid(), instance_number=1, manufacturer="medgan",
        manufacturer_model_name="medgan", software_versions=__version__,
        device_serial_number=source.checkpoint_sha256[:16],
        series_description=f"SYNTHETIC lesion mask medgan {source.tag}"[:64],
        content_label="SYNTHETIC", content_description="synthetic lesion mask (medgan)",
        omit_empty_frames=bool(frames.any()))
    return seg


def _to_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_case(image: np.ndarray, mask: np.ndarray, folder: Path, affine: np.ndarray,
                     modality: str, source: SyntheticSource, atomic: bool = True
                     ) -> tuple[list[Path], Path]:
    """Write ``image`` ``(C, X, Y[, Z])`` (physical units) and ``mask`` ``(X, Y[, Z])`` into
    ``folder``: ``image/`` (``image_0000/``, ... for several channels) + ``seg/SEG.dcm``.

    Returns the series folders (one per channel) and the SEG file. ``atomic=False`` creates
    files that must not exist yet (for a staging folder, as ``medgan sample`` does).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:  # 2D patch -> one-slice volume
        image, mask = image[..., None], np.asarray(mask)[..., None]
    write = write_bytes_atomic if atomic else write_bytes
    names = ["image"] if image.shape[0] == 1 else [f"image_{c:04d}" for c in range(len(image))]
    first, study, frame = None, new_uid(), new_uid()
    for c, (name, channel) in enumerate(zip(names, image, strict=True)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        datasets = series_datasets(channel, affine, modality, source, study, frame, c + 1)
        first = first or datasets
        for k, ds in enumerate(datasets):
            write(folder / name / f"IM{k:05d}.dcm", _to_bytes(ds))
    (folder / "seg").mkdir(parents=True, exist_ok=True)
    seg_path = write(folder / "seg" / "SEG.dcm", _to_bytes(seg_dataset(first, mask, affine,
                                                                       source)))
    return [folder / n for n in names], seg_path
