"""Minimum lesion size in mm (equivalent diameter) at sampling time: the measure, the setting,
and redraws in ``sample`` / ``medgan sample``."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from medgan.cli import main
from medgan.errors import CheckpointError, ConfigError, DataError
from medgan.sampling import MaskPostprocess, equivalent_diameter_mm, sample, sample_seed
from medgan.sampling.postprocess import DEFAULT_MIN_DIAMETER_MM


def _disc(radius: float, size: int = 41) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size // 2
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


@pytest.mark.parametrize(("n", "spacing", "expected"), [
    (12, (2.0, 2.0, 3.0), 2 * math.sqrt(12 * 4.0 / math.pi)),  # 48 mm^2
    (12, (0.5, 2.0), 2 * math.sqrt(12 * 1.0 / math.pi)),
    (27, (1.0, 1.0, 1.0), (6 * 27 / math.pi) ** (1 / 3)),  # 3D: 27 mm^3
    (27, (2.0, 2.0, 3.0), (6 * 27 * 12.0 / math.pi) ** (1 / 3)),
])
def test_equivalent_diameter_from_voxel_count_and_spacing(n, spacing, expected):
    ndim = 3 if n == 27 else 2
    mask = np.zeros((8,) * ndim, np.uint8)
    mask.reshape(-1)[:n] = 1  # shape does not matter, only area / volume
    assert equivalent_diameter_mm(mask, spacing) == pytest.approx(expected)


def test_a_drawn_disc_measures_its_own_diameter():
    disc = _disc(radius=10)  # 20 voxels across at 1 mm; 40 mm at 2 mm
    assert equivalent_diameter_mm(disc, (1.0, 1.0, 5.0)) == pytest.approx(20.0, rel=0.03)
    assert equivalent_diameter_mm(disc, (2.0, 2.0, 5.0)) == pytest.approx(40.0, rel=0.03)
    assert equivalent_diameter_mm(np.zeros((4, 4)), (1.0, 1.0)) == 0.0


def test_bad_inputs():
    with pytest.raises(DataError, match="2 or 3 spatial dimensions"):
        equivalent_diameter_mm(np.ones((1, 4, 4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="spacing"):
        equivalent_diameter_mm(np.ones((4, 4, 4)), (1.0, 1.0))
    for bad in (-1.0, float("nan"), "5", True):
        with pytest.raises(ConfigError, match="min_diameter_mm must be a non-negative number"):
            MaskPostprocess(min_diameter_mm=bad)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_too_small_threshold(spatial_dims):
    mask = np.zeros((16,) * spatial_dims, np.uint8)
    mask[(slice(4, 8),) * spatial_dims] = 1  # 4^d voxels
    spacing = (1.0, 1.0, 1.0)
    d = equivalent_diameter_mm(mask, spacing)  # 4.51 mm (2D), 4.96 mm (3D)
    assert MaskPostprocess(min_diameter_mm=d + 0.01).too_small(mask, spacing)
    assert not MaskPostprocess(min_diameter_mm=d).too_small(mask, spacing)
    assert not MaskPostprocess(min_diameter_mm=0).too_small(mask, spacing)
    assert MaskPostprocess(min_diameter_mm=5).too_small(mask, spacing)
    assert not MaskPostprocess(min_diameter_mm=5).too_small(mask, (2.0, 2.0, 2.0))  # 2 mm voxels
    assert not MaskPostprocess(min_diameter_mm=100).too_small(mask * 0, spacing)  # empty


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_default_is_3_mm(spatial_dims):
    assert MaskPostprocess().min_diameter_mm == DEFAULT_MIN_DIAMETER_MM == 3.0
    mask = np.zeros((16,) * spatial_dims, np.uint8)
    mask[(slice(4, 6),) * spatial_dims] = 1  # 2^d voxels: 2.26 mm (2D), 2.48 mm (3D) at 1 mm
    assert MaskPostprocess().too_small(mask, (1.0, 1.0, 1.0))
    assert not MaskPostprocess().too_small(mask, (1.5, 1.5, 1.5))  # 3.39 mm, 3.72 mm


def _diameters(out, spacing):
    cases = json.loads((out / "dataset.json").read_text())["training"]
    return [equivalent_diameter_mm(np.asarray(nib.load(out / c["label"]).dataobj)[..., 0], spacing)
            for c in cases]


def test_small_lesions_are_redrawn_and_counted(tmp_path, ckpt_2d):
    """The untrained test generator draws lesions of 38-50 mm at 1.5 mm; 44.5 mm splits them."""
    post = MaskPostprocess(min_diameter_mm=44.5)
    a = sample(ckpt_2d, 8, tmp_path / "a", seed=0, batch_size=3, progress=False,
               postprocess=post)
    assert a.n_redrawn_small > 0 and a.n_redrawn_empty == 0
    assert any(s != sample_seed(0, i) for i, s in enumerate(a.seeds))
    assert min(_diameters(a.out, (1.5, 1.5))) >= 44.5
    recorded = json.loads(a.datalist.read_text())["medgan"]["postprocess"]
    assert recorded["min_diameter_mm"] == 44.5
    # the redraws are part of the seed stream: another batch size gives the same files
    b = sample(ckpt_2d, 8, tmp_path / "b", seed=0, batch_size=8, progress=False,
               postprocess=post)
    assert b.seeds == a.seeds and b.n_redrawn_small == a.n_redrawn_small
    off = sample(ckpt_2d, 8, tmp_path / "c", seed=0, progress=False,
                 postprocess=MaskPostprocess(min_diameter_mm=0))
    assert off.n_redrawn_small == 0
    assert off.seeds == [sample_seed(0, i) for i in range(8)]
    assert min(_diameters(off.out, (1.5, 1.5))) < 44.5


def test_gives_up_when_every_lesion_is_too_small(tmp_path, ckpt_2d):
    with pytest.raises(CheckpointError, match=r"sample 0 had a lesion below the post-processing "
                                              r"min_diameter_mm in every one of 20 draws"):
        sample(ckpt_2d, 1, tmp_path / "x", progress=False,
               postprocess=MaskPostprocess(min_diameter_mm=1000.0))
    assert not (tmp_path / "x" / "dataset.json").exists()


def test_cli_option(tmp_path, ckpt_2d):
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "-n", "4", "--out",
                               str(tmp_path / "a"), "--min-lesion-diameter-mm", "44.5",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "lesion(s) below 44.5 mm" in res.output
    post = json.loads((tmp_path / "a" / "dataset.json").read_text())["medgan"]["postprocess"]
    assert post["min_diameter_mm"] == 44.5
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "-n", "1", "--out",
                               str(tmp_path / "b"), "--no-progress"])
    assert res.exit_code == 0, res.output
    post = json.loads((tmp_path / "b" / "dataset.json").read_text())["medgan"]["postprocess"]
    assert post["min_diameter_mm"] == DEFAULT_MIN_DIAMETER_MM
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "-n", "1", "--out",
                               str(tmp_path / "c"), "--min-lesion-diameter-mm", "-1"])
    assert res.exit_code == 2 and "--min-lesion-diameter-mm" in res.output
