"""Lesion inpainting on real LIDC-IDRI slices from ../shared/data (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from medgan.augment.inpaint import RandLesionInpaint
from medgan.augment.masks import RealMaskSource
from medgan.augment.placement import PlacementSettings
from medgan.data.intensity import IntensityMapping
from medgan.models.inpaint import InpaintGenerator

LIDC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc_nodules"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not LIDC.is_dir(), reason=f"{LIDC} is absent"),
]


def _slices(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for f in sorted((LIDC / "imagesTr").glob("*.nii.gz"))[:n]:
        img = nib.load(f).get_fdata(dtype=np.float32)
        lab = nib.load(LIDC / "labelsTr" / f.name).get_fdata(dtype=np.float32) > 0
        z = int(lab.sum((0, 1)).argmax())
        out.append((img[None, ..., z], lab[None, ..., z].astype(np.uint8)))
    return out


def test_inserted_nodules_keep_the_label_exact_and_the_rest_untouched():
    slices = _slices(6)
    masks = [lab[0] for _, lab in slices]
    torch.manual_seed(0)
    gen = InpaintGenerator(2, 64, ngf=8, erase_margin=3)  # untrained: geometry only
    t = RandLesionInpaint(gen, RealMaskSource(masks, 2), IntensityMapping("none", (0.0,), (255.0,)),
                          prob=1.0, placement=PlacementSettings(region="intensity",
                                                                intensity_range=(0.0, 60.0),
                                                                margin_mm=3.0),
                          spacing_mm=(1.0, 1.0)).set_random_state(0)
    inserted = 0
    for img, lab in slices:
        out, new = t(img, lab)
        added = (new[0] > 0) & (lab[0] == 0)
        np.testing.assert_array_equal(new[0] > 0, (lab[0] > 0) | added)
        changed = (out != img)[0]
        assert not changed[distance_transform_edt(~added) > 3].any()
        if added.any():
            inserted += 1
            assert (img[0][added] <= 60).all()  # placed in dark (lung) voxels only
            assert distance_transform_edt(lab[0] == 0)[added].min() > 3.0
            assert out.min() >= 0.0 and out.max() <= 255.0
    assert inserted + sum(t.skipped.values()) == len(slices) and inserted >= 3
