"""CarveMix baseline: carving, pasting, randomness and the training-cases-only rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.errors import ConfigError
from medgan.evaluation.baselines import RandCarveMixd, build_lesion_snippets, carve_mix


def case(case_id: str, center: tuple[int, int, int], value: float = 0.8) -> dict:
    """(1, 24, 24, 6) image at -0.5 with a lesion cube of ``value``, label 1 there."""
    image = torch.full((1, 24, 24, 6), -0.5)
    label = torch.zeros((1, 24, 24, 6), dtype=torch.uint8)
    x, y, z = center
    image[0, x - 2:x + 2, y - 2:y + 2, z - 1:z + 2] = value
    label[0, x - 2:x + 2, y - 2:y + 2, z - 1:z + 2] = 1
    return {"case_id": case_id, "image": image, "label": label}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_snippets_come_only_from_given_cases(spatial_dims: int) -> None:
    cases = [case("a", (8, 8, 3)), case("b", (15, 15, 3))]
    snippets = build_lesion_snippets(cases, spatial_dims, margin_voxels=2)
    assert {s.case_id for s in snippets} == {"a", "b"}
    for s in snippets:
        assert s.image.ndim == spatial_dims + 1 and s.distance.ndim == spatial_dims
        assert (s.distance[s.label[0].numpy() > 0] <= 0).all()  # lesion = inside (negative)


def test_carve_mix_pastes_region_with_its_label() -> None:
    src = case("a", (8, 8, 3), value=0.9)
    snippet = build_lesion_snippets([src], 2, margin_voxels=3)[0]
    image, label = torch.full((1, 16, 16), -0.2), torch.zeros((1, 16, 16))
    out_img, out_lab = carve_mix(image, label, snippet, lam=0.0, center=(10, 6))
    assert int(out_lab.sum()) == 16  # the 4 x 4 lesion slice, nothing of the rim
    assert torch.all(out_img[out_lab > 0] == 0.9)
    assert torch.all(out_img[out_lab == 0] == -0.2)
    assert image.eq(-0.2).all() and label.eq(0).all()  # inputs untouched
    _, grown = carve_mix(image, label, snippet, lam=2.0, center=(10, 6))
    assert int(grown.sum()) == 16  # a rim adds source tissue, not label


def test_rand_carvemix_never_uses_own_case_and_is_reproducible() -> None:
    snippets = build_lesion_snippets([case("a", (8, 8, 3), 0.9), case("b", (15, 15, 3), 0.3)], 2)
    target = {"image": torch.full((1, 16, 16), -0.2), "label": torch.zeros((1, 16, 16)),
              "case_id": "a"}
    t = RandCarveMixd(("image", "label"), snippets, prob=1.0).set_random_state(seed=0)
    outs = [t(target) for _ in range(6)]
    for out in outs:
        lesion = out["image"][out["label"] > 0]
        assert lesion.numel() > 0 and torch.allclose(lesion, torch.tensor(0.3))  # from "b"
    again = RandCarveMixd(("image", "label"), snippets, prob=1.0).set_random_state(seed=0)
    for out in outs:
        assert torch.equal(again(target)["image"], out["image"])


def test_rand_carvemix_prob_zero_and_no_other_case_are_no_ops() -> None:
    snippets = build_lesion_snippets([case("a", (8, 8, 3))], 2)
    item = {"image": torch.zeros((1, 16, 16)), "label": torch.zeros((1, 16, 16)), "case_id": "x"}
    assert RandCarveMixd(("image", "label"), snippets, prob=0.0)(item)["label"].sum() == 0
    own = {**item, "case_id": "a"}
    assert RandCarveMixd(("image", "label"), snippets, prob=1.0)(own)["label"].sum() == 0
    with pytest.raises(ConfigError, match="Probability"):
        RandCarveMixd(("image", "label"), snippets, prob=1.5)


def test_lesion_goes_onto_foreground() -> None:
    snippets = build_lesion_snippets([case("b", (12, 12, 3))], 2)
    image = torch.full((1, 32, 32), -1.0)
    image[0, 20:30, 20:30] = 0.0  # the only non-background area
    t = RandCarveMixd(("image", "label"), snippets, prob=1.0, lam_range=(0.0, 0.0))
    for seed in range(5):
        out = t.set_random_state(seed=seed)({"image": image, "label": torch.zeros(1, 32, 32)})
        centre = np.argwhere(out["label"][0].numpy() > 0).mean(0)
        assert 18 <= centre[0] <= 31 and 18 <= centre[1] <= 31


def test_pasted_region_stays_inside_the_body() -> None:
    from medgan.augment.carvemix import RandCarveMixd as Moved

    assert Moved is RandCarveMixd  # the old import path re-exports the moved transform
    snippets = build_lesion_snippets([case("b", (12, 12, 3), value=0.9)], 2, margin_voxels=6)
    image = torch.full((1, 32, 32), -1.0)
    image[0, 8:24, 8:24] = 0.0  # a small body in air
    t = RandCarveMixd(("image", "label"), snippets, prob=1.0, lam_range=(4.0, 4.0))
    body = image[0] > -1.0
    for seed in range(10):
        out = t.set_random_state(seed=seed)({"image": image, "label": torch.zeros(1, 32, 32)})
        assert out["label"][0].sum() > 0, seed  # a lesion fits, so one is always pasted
        assert not out["label"][0][~body].any()
        assert torch.equal(out["image"][0][~body], image[0][~body])  # no rim in the air
