"""Write generated image + mask pairs as NIfTI files in physical units, reproducibly.

* Image: model space [-1, 1] -> physical units (HU, SUV, MR scale) with the checkpoint's
  :class:`~medgan.data.IntensityMapping`, stored as float32 for every modality (no rounding, so
  the file holds exactly what the generator produced; CT is not cast to int16).
* Mask: uint8 {0, 1}.
* Geometry: patches are in RAS voxel order (as in training), so the affine is the diagonal of
  ``spacing_mm`` with the origin at 0. A 2D patch ``(X, Y)`` becomes a one-slice volume
  ``(X, Y, 1)`` whose slice thickness is ``spacing_mm[2]``. Several image channels are stored as
  a 4D ``(X, Y, Z, C)`` volume (channel last, which MONAI's NIfTI reader moves to the front).
* Header: ``descrip`` marks the file as synthetic (checkpoint hash, seed, index), ``aux_file``
  holds ``"medgan"``.
* Files are byte-identical for identical inputs: the gzip stream is written here with
  ``mtime=0`` and no file name (nibabel would record the temporary file's name), and every file
  is written under a temporary name in its final folder and renamed into place.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medgan.atomic import write_bytes_atomic as _write_atomic
from medgan.data.intensity import IntensityMapping
from medgan.errors import OutputError

GZIP_LEVEL = 1  # as nibabel, for masks; level 6 is 40% slower and saves <1%
GZIP_WBITS = 31  # zlib's gzip container: header with mtime 0 and no file name
DESCRIP_BYTES = 80  # fixed size of the NIfTI-1 header field
DESCRIP_OFFSET = nib.nifti1.header_dtype.fields["descrip"][1]
VOX_OFFSET = 352  # 348-byte header + 4-byte extension flag
AUX_FILE = "medgan"


def synthetic_descrip(checkpoint_sha256: str, seed: int, index: int) -> str:
    """The header marker of a synthetic file, e.g. ``medgan synthetic ckpt=1a2b.. seed=7 idx=0``."""
    text = f"medgan synthetic ckpt={checkpoint_sha256[:12]} seed={seed} idx={index}"
    return text[:DESCRIP_BYTES]


def ras_affine(spacing_mm: Sequence[float]) -> np.ndarray:
    """4x4 RAS affine: ``diag(sx, sy, sz, 1)``, origin at 0 (mm)."""
    return np.diag([float(s) for s in spacing_mm[:3]] + [1.0])


def _volume(array: np.ndarray) -> np.ndarray:
    """``(C, X, Y[, Z])`` channel-first -> ``(X, Y, Z)`` or ``(X, Y, Z, C)`` for NIfTI."""
    if array.ndim == 3:  # 2D patch -> one-slice volume
        array = array[..., None]
    if array.shape[0] == 1:
        return array[0]
    return np.moveaxis(array, 0, -1)


@functools.lru_cache(maxsize=64)
def _header_block(shape: tuple[int, ...], dtype: str, spacing_mm: tuple[float, ...]) -> bytes:
    """NIfTI-1 single-file header + empty extension block (352 bytes), descrip left blank.

    Built once per geometry with nibabel; nothing in it depends on the voxel values (float32
    and uint8 are stored unscaled), so every file of that geometry shares it.
    """
    affine = ras_affine(spacing_mm)
    img = nib.Nifti1Image(np.zeros(shape, dtype=dtype), affine)
    hdr = img.header
    hdr.set_data_dtype(np.dtype(dtype))
    hdr.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr["aux_file"] = AUX_FILE.encode()
    block = img.to_bytes()[:VOX_OFFSET]
    if len(block) != VOX_OFFSET or int(hdr["vox_offset"]) not in (0, VOX_OFFSET):
        raise RuntimeError("unexpected NIfTI header layout from nibabel")  # pragma: no cover
    return block


def nifti_bytes(volume: np.ndarray, spacing_mm: Sequence[float], descrip: str) -> bytes:
    """An uncompressed ``.nii`` file for ``volume`` ``(X, Y, Z[, C])`` (dtype kept).

    Identical to nibabel's ``Nifti1Image(volume, affine).to_bytes()`` with the header fields
    set here, but assembled from a cached header so that writing stays cheap.
    """
    block = _header_block(tuple(volume.shape), volume.dtype.str,
                          tuple(float(s) for s in spacing_mm[:3]))
    text = descrip.encode("ascii", "replace")[:DESCRIP_BYTES].ljust(DESCRIP_BYTES, b"\0")
    return b"".join((block[:DESCRIP_OFFSET], text, block[DESCRIP_OFFSET + DESCRIP_BYTES:],
                     np.asarray(volume).tobytes(order="F")))


def nifti_gz_bytes(volume: np.ndarray, spacing_mm: Sequence[float], descrip: str) -> bytes:
    """A complete ``.nii.gz`` file (gzip with ``mtime=0`` and no file name: deterministic).

    Floating-point volumes are deflated with Huffman coding only: generated float32 voxels
    hold no repeated byte strings for LZ77 to find, so this compresses them as well as level 1
    (to 85 % of the raw size on generator output) in less than half the time (0.14 instead of
    0.31 ms per 64 x 64 image). Integer volumes (masks) use level 1, whose run matching
    shrinks them to a few percent.
    """
    data = nifti_bytes(volume, spacing_mm, descrip)
    if volume.dtype.kind == "f":
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS, 8, zlib.Z_HUFFMAN_ONLY)
        return deflate.compress(data) + deflate.flush()
    return zlib.compress(data, GZIP_LEVEL, wbits=GZIP_WBITS)


def write_bytes_atomic(path: Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to a temporary name in ``path``'s folder, then rename it into place."""
    try:
        return _write_atomic(path, data, fsync)
    except OSError as err:
        raise OutputError(f"{path}: cannot be written ({err.strerror or err})") from None


def to_physical(image: np.ndarray | torch.Tensor, intensity: IntensityMapping) -> np.ndarray:
    """Model-space ``(C, *P)`` in [-1, 1] -> float32 physical units (HU, SUV, MR scale)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return np.asarray(intensity.inverse(np.asarray(image, dtype=np.float32)), np.float32)


def write_bytes(path: Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to a new file ``path`` (no temporary name: for staging folders)."""
    try:
        fh = open(path, "xb")  # noqa: SIM115 - closed below; an existing file is left alone
    except OSError as err:
        raise OutputError(f"{path}: cannot be written ({err.strerror or err})") from None
    try:
        with fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)  # ours: created above
        raise OutputError(f"{path}: cannot be written ({err.strerror or err})") from None
    return path


def write_pair(
    image: np.ndarray, mask: np.ndarray, image_path: Path, label_path: Path,
    spacing_mm: Sequence[float], descrip: str, fsync: bool = False, atomic: bool = True,
) -> tuple[Path, Path]:
    """Write one pair.

    Args:
        image: ``(C, X, Y[, Z])`` in physical units (see :func:`to_physical`), written as
            float32.
        mask: binary mask ``(X, Y[, Z])`` (any integer/bool dtype; written as uint8 {0, 1}).
        spacing_mm: voxel spacing (x, y, z) in mm; z is the slice thickness of 2D patches.
        descrip: header marker, see :func:`synthetic_descrip`.
        atomic: write each file under a temporary name and rename it into place; False
            writes the final names directly (for a staging folder that is itself moved into
            place, as ``medgan sample`` does) and refuses to replace an existing file.
    """
    volume = _volume(np.asarray(image, dtype=np.float32))
    label = _volume((np.asarray(mask) > 0).astype(np.uint8)[None])
    for path, array in ((image_path, volume), (label_path, label)):
        data = nifti_gz_bytes(array, spacing_mm, descrip)
        if atomic:
            write_bytes_atomic(path, data, fsync)
        else:
            write_bytes(path, data, fsync)
    return image_path, label_path
