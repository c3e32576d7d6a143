"""NIfTI writing: geometry, physical units, synthetic marker, binary mask, determinism."""

from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from medgan.data.intensity import IntensityMapping
from medgan.errors import OutputError
from medgan.sampling.writer import (
    nifti_bytes,
    ras_affine,
    synthetic_descrip,
    to_physical,
    write_pair,
)

CT = IntensityMapping("ct", (-200.0,), (300.0,))


def _pair(spatial_dims: int, channels: int = 1, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (channels, *(size,) * spatial_dims)).astype(np.float32)
    mask = (rng.random((size,) * spatial_dims) > 0.5).astype(np.uint8)
    return image, mask


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_geometry_units_marker_and_mask(tmp_path, spatial_dims):
    image, mask = _pair(spatial_dims)
    spacing = (0.8, 0.9, 2.5)
    descrip = synthetic_descrip("ab" * 32, seed=7, index=3)
    ip, lp = write_pair(to_physical(image, CT), mask * 5, tmp_path / "i.nii.gz",
                        tmp_path / "l.nii.gz", spacing, descrip)
    img, lab = nib.load(ip), nib.load(lp)
    expected_shape = (16, 16, 1) if spatial_dims == 2 else (16, 16, 16)
    assert img.shape == lab.shape == expected_shape
    np.testing.assert_allclose(img.affine, np.diag([0.8, 0.9, 2.5, 1.0]))
    np.testing.assert_allclose(img.header.get_zooms(), spacing)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() == np.float32
    assert lab.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1}  # values > 0 written as 1
    # physical units: [-1, 1] -> [-200, 300] HU, and back again
    hu = np.asarray(img.dataobj).reshape(image.shape)
    np.testing.assert_allclose(hu, (image + 1) / 2 * 500 - 200, atol=1e-3)
    np.testing.assert_allclose(CT.forward(hu), image, atol=1e-5)
    text = img.header["descrip"].tobytes().rstrip(b"\0").decode()
    assert text == "medgan synthetic ckpt=abababababab seed=7 idx=3"
    assert img.header["aux_file"].tobytes().rstrip(b"\0") == b"medgan"
    assert lab.header["descrip"].tobytes().startswith(b"medgan synthetic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.nii.gz", "l.nii.gz"]  # no temps


# building any LoadImage instantiates every MONAI reader; the GPU DICOM one warns without its plugin
@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_multichannel_written_channel_last_and_loaded_channel_first(tmp_path):
    from monai.transforms import LoadImage

    image, mask = _pair(3, channels=2, size=8)
    mapping = IntensityMapping("mr", (0.0, 10.0), (1000.0, 500.0))
    ip, _ = write_pair(to_physical(image, mapping), mask, tmp_path / "i.nii.gz",
                       tmp_path / "l.nii.gz", (1, 1, 1), "x")
    assert nib.load(ip).shape == (8, 8, 8, 2)
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(ip))
    assert tuple(loaded.shape) == (2, 8, 8, 8)
    np.testing.assert_allclose(np.asarray(loaded[1]), (image[1] + 1) / 2 * 490 + 10, atol=1e-3)


def test_fast_header_matches_nibabel():
    image, _ = _pair(3, size=8)
    volume = image[0]
    affine = ras_affine((1.5, 2.0, 3.0))
    ref = nib.Nifti1Image(volume, affine)
    ref.header.set_xyzt_units("mm")
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=1)
    ref.header["descrip"] = b"hello"
    ref.header["aux_file"] = b"medgan"
    assert nifti_bytes(volume, (1.5, 2.0, 3.0), "hello") == ref.to_bytes()


def test_byte_identical_and_no_timestamp(tmp_path):
    image, mask = _pair(2)
    a = write_pair(image, mask, tmp_path / "a.nii.gz", tmp_path / "al.nii.gz", (1, 1, 1), "d")
    b = write_pair(image, mask, tmp_path / "b.nii.gz", tmp_path / "bl.nii.gz", (1, 1, 1), "d")
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()
    raw = a[0].read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME field
    assert raw[3] & 0x08 == 0  # no FNAME (a temporary name would break byte identity)
    assert gzip.decompress(raw)[:4] == (348).to_bytes(4, sys.byteorder)  # sizeof_hdr


def test_descrip_fits_the_header():
    text = synthetic_descrip("f" * 64, seed=2**53 - 1, index=10**6)
    assert len(text) <= 80
    assert text.startswith("medgan synthetic ckpt=ffffffffffff")


def test_non_atomic_write_refuses_to_replace_and_matches_atomic(tmp_path):
    image = np.linspace(-1000, 400, 64, dtype=np.float32).reshape(1, 8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    a = write_pair(image, mask, tmp_path / "a.nii.gz", tmp_path / "al.nii.gz", (1, 1, 2), "d")
    b = write_pair(image, mask, tmp_path / "b.nii.gz", tmp_path / "bl.nii.gz", (1, 1, 2), "d",
                   atomic=False)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    with pytest.raises(OutputError, match="b.nii.gz"):
        write_pair(image, mask, tmp_path / "b.nii.gz", tmp_path / "c.nii.gz", (1, 1, 2), "d",
                   atomic=False)
    assert not (tmp_path / "c.nii.gz").exists()
