"""Build the sarcoma sample shipped in ``medgan/sample_data/sarcoma`` from the MIRP test data.

The source is three soft-tissue sarcoma patients of the TCIA "Soft-tissue-Sarcoma" collection
(CC BY 3.0), each with a CT, a T1-weighted MR and a PET volume plus a gross tumour volume mask,
as converted to NIfTI by the MIRP project (oncoray/mirp). For every volume this script

1. crops image and mask to the tumour bounding box plus a margin (``--margin-mm`` in-plane,
   ``--margin-slices`` through-plane, clipped to the volume) with ``img.slicer``, which moves
   the origin so the affine stays correct; spacing and orientation are untouched;
2. re-encodes the intensities: CT as int16 HU, MR as int16 when its values are integers
   (float32 otherwise), PET as float32 SUV, masks as uint8; every cast is checked to be exact;
3. replaces the header's free text with a short provenance line, keeps the qform/sform codes,
   and writes gzip level 9 with a zero timestamp, so that a rebuild is byte-identical;
4. writes a MONAI decathlon-style ``dataset.json`` per modality.

Every written file is read back and compared with the source crop (values, affine, tumour
voxel count), so the sample is verified each time it is built.

Usage, from the repository root::

    python scripts/build_sample_data.py [--source ../shared/data/sarcoma]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "sarcoma"
DEFAULT_OUTPUT = REPO_ROOT / "medgan" / "sample_data" / "sarcoma"
CASES = ("STS_001", "STS_002", "STS_003")
SIZE_LIMIT_BYTES = 15_000_000  # 15 MB for the whole medgan/sample_data folder

LICENCE = "CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/)"
REFERENCE = (
    "Vallieres M, Freeman CR, Skamene SR, El Naqa I. A radiomics model from joint FDG-PET and "
    "MRI texture features for the prediction of lung metastases in soft-tissue sarcomas of the "
    "extremities. Phys Med Biol 2015;60(14):5471-96. Data: The Cancer Imaging Archive, "
    "Soft-tissue-Sarcoma, https://doi.org/10.7937/K9/TCIA.2015.7GO2GSKS. Clark K et al. The "
    "Cancer Imaging Archive (TCIA). J Digit Imaging 2013;26(6):1045-57."
)


@dataclass(frozen=True)
class Modality:
    """One imaging modality of the sample: where it comes from and how it is stored."""

    key: str  # output folder name, also the medgan modality name
    source_folder: str  # folder name inside each source case
    label: str  # decathlon "modality" entry and header description
    description: str
    integer_storage: bool  # store as int16 when the values are integers (else float32)


MODALITIES = (
    Modality("ct", "CT", "CT", "CT in Hounsfield units", integer_storage=True),
    Modality("mr", "MR_T1", "MR", "T1-weighted MR, arbitrary scanner units", integer_storage=True),
    Modality("pet", "PET", "PET", "FDG-PET in SUV", integer_storage=False),
)


def through_plane_axis(affine: np.ndarray) -> int:
    """Voxel axis closest to the scanner's head-foot axis: the slice axis of axial scans."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def tumour_box(
    mask: np.ndarray,
    affine: np.ndarray,
    zooms: tuple[float, ...],
    margin_mm: float,
    margin_slices: int,
) -> tuple[slice, ...]:
    """Bounding box of the non-zero mask voxels plus the margins, clipped to the volume."""
    slice_axis = through_plane_axis(affine)
    box = []
    for axis, coords in enumerate(np.nonzero(mask)):
        pad = margin_slices if axis == slice_axis else math.ceil(margin_mm / zooms[axis])
        start = max(int(coords.min()) - pad, 0)
        stop = min(int(coords.max()) + pad + 1, mask.shape[axis])
        box.append(slice(start, stop))
    return tuple(box)


def storage_dtype(data: np.ndarray, integer_storage: bool) -> np.dtype:
    """int16 when requested and every value is an int16 integer, float32 otherwise."""
    info = np.iinfo(np.int16)
    if (
        integer_storage
        and np.all(np.isfinite(data))
        and np.array_equal(data, np.round(data))
        and data.min() >= info.min
        and data.max() <= info.max
    ):
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def encode(
    source: nib.Nifti1Image,
    cropped: nib.Nifti1Image,
    data: np.ndarray,
    dtype: np.dtype,
    descrip: str,
) -> nib.Nifti1Image:
    """A new image of ``data`` cast to ``dtype``, with the crop's geometry and a clean header.

    The qform/sform codes and units come from the uncropped ``source``: building the crop
    rewrites its header (sform "aligned", qform "unknown"), which the source did not have.
    """
    header_in = source.header
    stored = data.astype(dtype)
    if not np.array_equal(stored.astype(np.float64), data.astype(np.float64)):
        raise RuntimeError(f"casting to {dtype} would change values ({descrip})")
    header = nib.Nifti1Header()
    header.set_xyzt_units(*header_in.get_xyzt_units())
    image = nib.Nifti1Image(stored, cropped.affine, header=header)
    image.header.set_data_dtype(dtype)
    image.header.set_slope_inter(1.0, 0.0)
    qform_code = int(header_in["qform_code"])
    sform_code = int(header_in["sform_code"])
    image.set_qform(cropped.affine if qform_code else None, code=qform_code)
    image.set_sform(cropped.affine if sform_code else None, code=sform_code)
    image.header["descrip"] = descrip.encode("ascii")
    return image


def write_gzip(image: nib.Nifti1Image, path: Path) -> None:
    """Write ``image`` as .nii.gz, gzip level 9 and no timestamp, so rebuilds are identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0))


def verify(
    path: Path, source: nib.Nifti1Image, expected: np.ndarray, affine: np.ndarray, dtype: np.dtype
) -> None:
    """Read ``path`` back and check its values, affine, header codes and on-disk dtype."""
    written = nib.load(path)
    for code in ("qform_code", "sform_code"):
        if int(written.header[code]) != int(source.header[code]):
            raise RuntimeError(f"{path}: {code} differs from the source")
    if written.get_data_dtype() != dtype:
        raise RuntimeError(f"{path}: stored as {written.get_data_dtype()}, expected {dtype}")
    if not np.array_equal(np.asanyarray(written.dataobj), expected.astype(dtype)):
        raise RuntimeError(f"{path}: values differ from the source crop")
    if not np.allclose(written.affine, affine, atol=1e-4):
        raise RuntimeError(f"{path}: affine differs from the source crop")


def build_case(
    source_dir: Path, out_dir: Path, case: str, modality: Modality, args: argparse.Namespace
) -> dict:
    """Crop, re-encode, write and verify one image/mask pair; returns a summary row."""
    image = nib.load(source_dir / "nifti" / "image" / "image.nii.gz")
    mask = nib.load(source_dir / "nifti" / "mask" / "mask.nii.gz")
    mask_data = np.asanyarray(mask.dataobj)
    if image.shape != mask.shape or not np.allclose(image.affine, mask.affine, atol=1e-4):
        raise RuntimeError(f"{source_dir}: image and mask grids differ")
    if not set(np.unique(mask_data).tolist()) <= {0, 1} or not mask_data.any():
        raise RuntimeError(f"{source_dir}: mask must be binary and non-empty")

    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    box = tumour_box(mask_data, image.affine, zooms, args.margin_mm, args.margin_slices)
    image_crop, mask_crop = image.slicer[box], mask.slicer[box]
    image_data = np.asanyarray(image_crop.dataobj)
    mask_crop_data = np.asanyarray(mask_crop.dataobj)
    if int(mask_crop_data.sum()) != int(mask_data.sum()):
        raise RuntimeError(f"{source_dir}: the crop cuts off part of the tumour")

    image_dtype = storage_dtype(image_data, modality.integer_storage)
    text = f"medgan sample: TCIA Soft-tissue-Sarcoma {case} {modality.label}"
    outputs = (
        (out_dir / "imagesTr" / f"{case}.nii.gz", image, image_crop, image_data, image_dtype, text),
        (
            out_dir / "labelsTr" / f"{case}.nii.gz",
            mask,
            mask_crop,
            mask_crop_data,
            np.dtype(np.uint8),
            f"{text} tumour mask",
        ),
    )
    for path, source, crop, data, dtype, descrip in outputs:
        write_gzip(encode(source, crop, data, dtype, f"{descrip} (CC BY 3.0)"), path)
        verify(path, source, data, crop.affine, dtype)

    return {
        "case": case,
        "modality": modality.key,
        "source_shape": image.shape,
        "shape": image_crop.shape,
        "spacing_mm": zooms,
        "dtype": str(image_dtype),
        "range": (float(image_data.min()), float(image_data.max())),
        "tumour_voxels": int(mask_crop_data.sum()),
        "bytes": sum(path.stat().st_size for path, *_ in outputs),
    }


def write_datalist(out_dir: Path, modality: Modality, cases: tuple[str, ...]) -> None:
    """The decathlon-style dataset.json of one modality folder (paths relative to it)."""
    datalist = {
        "name": f"medgan sarcoma sample ({modality.label})",
        "description": (
            f"{modality.description}: soft-tissue sarcoma of the extremities, cropped around the "
            "gross tumour volume. From TCIA Soft-tissue-Sarcoma via the MIRP test data."
        ),
        "modality": {"0": modality.label},
        "labels": {"0": "background", "1": "tumour"},
        "licence": LICENCE,
        "reference": REFERENCE,
        "numTraining": len(cases),
        "training": [
            {"image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz"}
            for case in cases
        ],
    }
    (out_dir / "dataset.json").write_text(json.dumps(datalist, indent=2) + "\n")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="folder holding STS_00N/{CT,MR_T1,PET}/nifti (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="sample folder to write (default: %(default)s)",
    )
    parser.add_argument(
        "--margin-mm",
        type=float,
        default=60.0,
        help="in-plane margin around the tumour box (default: %(default)s)",
    )
    parser.add_argument(
        "--margin-slices",
        type=int,
        default=5,
        help="through-plane margin in slices (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [
        str(args.source / case / modality.source_folder)
        for case in CASES
        for modality in MODALITIES
        if not (args.source / case / modality.source_folder / "nifti").is_dir()
    ]
    if missing:
        print(f"error: source folders not found: {', '.join(missing)}", file=sys.stderr)
        return 2

    print(
        f"{'case':<8} {'mod':<4} {'source shape':<15} {'cropped shape':<15} "
        f"{'spacing mm':<19} {'dtype':<8} {'range':<18} {'tumour':>7} {'kB':>6}"
    )
    for modality in MODALITIES:
        out_dir = args.output / modality.key
        for case in CASES:
            row = build_case(
                args.source / case / modality.source_folder, out_dir, case, modality, args
            )
            spacing = "x".join(f"{z:.2f}" for z in row["spacing_mm"])
            value_range = f"{row['range'][0]:g}..{row['range'][1]:g}"
            print(
                f"{case:<8} {modality.key:<4} {'x'.join(map(str, row['source_shape'])):<15} "
                f"{'x'.join(map(str, row['shape'])):<15} {spacing:<19} {row['dtype']:<8} "
                f"{value_range:<18} {row['tumour_voxels']:>7} {row['bytes'] / 1024:>6.0f}"
            )
        write_datalist(out_dir, modality, CASES)

    for modality in MODALITIES:
        size = folder_bytes(args.output / modality.key)
        print(f"{modality.key}: {size / 1e6:.2f} MB")
    total = folder_bytes(args.output)
    print(f"total {args.output}: {total / 1e6:.2f} MB")
    if total > SIZE_LIMIT_BYTES:
        print(f"error: sample data exceeds {SIZE_LIMIT_BYTES / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
