"""Known answers for Dice, HD95, lesion detection and the bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medgan.evaluation.metrics import (
    bootstrap_mean_ci,
    case_metrics,
    detection_counts,
    dice_score,
    hd95_mm,
    paired_bootstrap_ci,
)


def box(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_dice_known_values() -> None:
    a = box((10, 10, 4), (0, 0, 0), (4, 5, 4))  # 80 voxels
    b = box((10, 10, 4), (2, 0, 0), (6, 5, 4))  # 80 voxels, 40 shared
    assert dice_score(a, a) == pytest.approx(1.0)
    assert dice_score(a, b) == pytest.approx(0.5)
    assert dice_score(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice_score(a, np.zeros_like(a)) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 3.0)])
def test_hd95_shifted_box_in_mm(spacing: tuple[float, float, float]) -> None:
    gt = box((30, 30, 6), (5, 5, 1), (15, 15, 5))
    pred = np.roll(gt, 3, axis=0)  # every surface point 3 voxels away along x at most
    assert hd95_mm(gt, gt, spacing) == pytest.approx(0.0)
    assert hd95_mm(pred, gt, spacing) == pytest.approx(3 * spacing[0], rel=1e-3)


def test_hd95_empty_is_nan() -> None:
    gt = box((10, 10, 3), (2, 2, 0), (5, 5, 2))
    assert math.isnan(hd95_mm(np.zeros_like(gt), gt, (1, 1, 1)))
    assert math.isnan(hd95_mm(gt, np.zeros_like(gt), (1, 1, 1)))
    m = case_metrics(np.zeros_like(gt), gt, (1, 1, 1))
    assert math.isnan(m.hd95_mm) and m.dice == 0.0 and m.missed == 1


def test_detection_two_lesions_one_found_one_missed_one_false() -> None:
    shape = (40, 40, 5)
    gt = box(shape, (2, 2, 1), (8, 8, 4)) | box(shape, (20, 20, 1), (26, 26, 4))
    pred = box(shape, (4, 4, 1), (9, 9, 3)) | box(shape, (30, 2, 1), (34, 6, 3))
    assert detection_counts(pred, gt) == {"gt_lesions": 2, "pred_lesions": 2, "found": 1,
                                          "missed": 1, "false": 1}


def test_bootstrap_mean_ci_contains_mean_and_is_seeded() -> None:
    x = np.random.default_rng(0).normal(0.7, 0.1, 60)
    ci = bootstrap_mean_ci(x, seed=1)
    assert ci["low"] < x.mean() < ci["high"] and ci["n"] == 60
    assert bootstrap_mean_ci(x, seed=1) == ci
    assert bootstrap_mean_ci([float("nan")])["n"] == 0


def test_paired_bootstrap_contains_true_difference_and_uses_pairing() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.9, 40)  # large between-unit spread
    delta = 0.03
    a = base + delta + rng.normal(0, 0.005, 40)
    ci = paired_bootstrap_ci(a, base, seed=0)
    assert ci["low"] < delta < ci["high"]
    # pairing removes the between-unit spread: the interval is far narrower than unpaired
    unpaired = paired_bootstrap_ci(a, rng.permutation(base), seed=0)
    assert ci["high"] - ci["low"] < 0.1 * (unpaired["high"] - unpaired["low"])


def test_paired_bootstrap_drops_nan_pairs_and_checks_lengths() -> None:
    ci = paired_bootstrap_ci([1.0, float("nan"), 3.0], [0.0, 1.0, 2.0])
    assert ci["n"] == 2 and ci["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_remove_small_components() -> None:
    from medgan.evaluation.metrics import remove_small_components

    pred = np.zeros((10, 10, 3), dtype=bool)
    pred[1:4, 1:4, 1] = True  # 9 voxels
    pred[7, 7, 0] = True  # a 1-voxel speck
    kept = remove_small_components(pred, 5)
    assert kept.sum() == 9 and not kept[7, 7, 0]
    assert np.array_equal(remove_small_components(pred, 0), pred)
