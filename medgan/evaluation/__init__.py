"""Evaluation: downstream segmentation benchmark, sample quality and diversity, memorisation.

Names are re-exported lazily, so that importing a light submodule (e.g. ``diversity`` during
training) does not load the segmentation stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "evaluate_segmentation": "medgan.evaluation.segmentation",
    "SegmentationResult": "medgan.evaluation.segmentation",
    "BenchmarkSettings": "medgan.evaluation.segmentation_run",
    "ARMS": "medgan.evaluation.arms",
    "evaluate_quality": "medgan.evaluation.quality",
    "evaluate_privacy": "medgan.evaluation.privacy",
    "RandCarveMixd": "medgan.evaluation.baselines",
    "build_lesion_snippets": "medgan.evaluation.baselines",
    "case_metrics": "medgan.evaluation.metrics",
    "paired_bootstrap_ci": "medgan.evaluation.metrics",
    "make_split": "medgan.evaluation.splits",
    "mean_pairwise_msssim": "medgan.evaluation.diversity",
    "nearest_real_patches": "medgan.evaluation.memorisation",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgan.evaluation' has no attribute {name!r}")
