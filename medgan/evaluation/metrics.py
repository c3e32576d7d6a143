"""Per-case segmentation metrics and paired bootstrap statistics.

* Dice and the 95th-percentile Hausdorff distance (HD95, in mm) from MONAI; HD95 is NaN when the
  prediction or the ground truth is empty (it is undefined there) and such cases are counted.
* Lesion-wise detection from connected components (full connectivity): a ground-truth lesion is
  *found* when any predicted voxel overlaps it, else *missed*; a predicted component that touches
  no ground-truth voxel is *false*.
* Bootstrap confidence intervals (NumPy, seeded) for a mean and for a paired mean difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from skimage.measure import label as connected_components


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one binary prediction against its ground truth (one test case)."""

    dice: float
    hd95_mm: float  # NaN when prediction or ground truth is empty
    gt_lesions: int
    pred_lesions: int
    found: int
    missed: int
    false: int
    gt_voxels: int
    pred_voxels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary arrays of one shape (MONAI ``DiceMetric``); 1.0 when both are empty."""
    from monai.metrics import DiceMetric

    p = torch.as_tensor(np.asarray(pred, dtype=bool), dtype=torch.float32)[None, None]
    g = torch.as_tensor(np.asarray(gt, dtype=bool), dtype=torch.float32)[None, None]
    if not g.any():
        return 1.0 if not p.any() else 0.0
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return float(metric(p, g).reshape(-1)[0])


def hd95_mm(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """95% Hausdorff distance in mm (MONAI, euclidean, symmetric); NaN if either mask is empty.

    ``pred`` and ``gt`` are binary ``(*S)`` arrays; ``spacing_mm`` has one entry per axis.
    """
    from monai.metrics import HausdorffDistanceMetric

    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if not p.any() or not g.any():
        return float("nan")
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    value = metric(torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float(),
                   spacing=[float(s) for s in spacing_mm[: p.ndim]])
    return float(value.reshape(-1)[0])


def detection_counts(pred: np.ndarray, gt: np.ndarray) -> dict[str, int]:
    """Lesion-wise counts ``{gt_lesions, pred_lesions, found, missed, false}`` (full connectivity).

    A ground-truth component is found when any predicted voxel lies inside it; a predicted
    component is false when none of its voxels is ground truth.
    """
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    gt_cc, n_gt = connected_components(g, connectivity=g.ndim, return_num=True)
    pred_cc, n_pred = connected_components(p, connectivity=p.ndim, return_num=True)
    found = len(np.unique(gt_cc[p & g])) if n_gt else 0
    hit_pred = len(np.unique(pred_cc[p & g])) if n_pred else 0
    return {"gt_lesions": int(n_gt), "pred_lesions": int(n_pred), "found": int(found),
            "missed": int(n_gt - found), "false": int(n_pred - hit_pred)}


def remove_small_components(pred: np.ndarray, min_voxels: int) -> np.ndarray:
    """``pred`` (binary ``(*S)``) without connected components (full connectivity) of fewer
    than ``min_voxels`` voxels."""
    p = np.asarray(pred, dtype=bool)
    if min_voxels <= 1 or not p.any():
        return p
    cc = connected_components(p, connectivity=p.ndim)
    sizes = np.bincount(cc.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[cc]


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float]) -> CaseMetrics:
    """All metrics of one case; ``pred``/``gt`` binary ``(X, Y, Z)``, ``spacing_mm`` per axis."""
    counts = detection_counts(pred, gt)
    return CaseMetrics(
        dice=dice_score(pred, gt), hd95_mm=hd95_mm(pred, gt, spacing_mm), **counts,
        gt_voxels=int(np.count_nonzero(gt)), pred_voxels=int(np.count_nonzero(pred)),
    )


def bootstrap_mean_ci(values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of the finite ``values`` with a percentile bootstrap CI ``{mean, low, high, n}``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(len(x))}


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n_resamples: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean paired difference ``a - b`` with a percentile bootstrap CI.

    ``a[i]`` and ``b[i]`` are the same unit (here: one test case under one seed) in two
    conditions; pairs are resampled together, and pairs with a non-finite member are dropped.
    Returns ``{mean, low, high, n}``.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, not {len(x)} and {len(y)}")
    return bootstrap_mean_ci(x - y, n_resamples, confidence, seed)
