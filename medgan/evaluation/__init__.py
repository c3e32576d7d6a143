"""Evaluation: downstream segmentation benchmark, sample quality and diversity, memorisation."""

from medgan.evaluation.baselines import RandCarveMixd, build_lesion_snippets
from medgan.evaluation.metrics import case_metrics, paired_bootstrap_ci
from medgan.evaluation.privacy import evaluate_privacy
from medgan.evaluation.quality import evaluate_quality
from medgan.evaluation.segmentation import SegmentationResult, evaluate_segmentation
from medgan.evaluation.segmentation_run import ARMS, BenchmarkSettings
from medgan.evaluation.splits import make_split
from medgan.similarity import mean_pairwise_msssim, nearest_real_patches

__all__ = [
    "ARMS", "BenchmarkSettings", "RandCarveMixd", "SegmentationResult", "build_lesion_snippets",
    "case_metrics", "evaluate_privacy", "evaluate_quality", "evaluate_segmentation",
    "make_split", "mean_pairwise_msssim", "nearest_real_patches", "paired_bootstrap_ci",
]
