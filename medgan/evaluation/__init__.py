"""Evaluation: downstream segmentation benchmark, sample quality and diversity, memorisation.

Names are exported lazily (see :mod:`medgan._lazy`): the CLI reads the benchmark's arm names
(:mod:`.arms`) without loading torch.
"""

from medgan._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys(("ARMS", "DEFAULT_ARMS", "GAN_ARMS", "LESION_ARMS", "REFERENCE_ARM"),
                    "medgan.evaluation.arms"),
    "RandCarveMixd": "medgan.augment.carvemix",
    "build_lesion_snippets": "medgan.augment.carvemix",
    "case_metrics": "medgan.evaluation.metrics", "paired_bootstrap_ci": "medgan.evaluation.metrics",
    "evaluate_privacy": "medgan.evaluation.privacy",
    "evaluate_quality": "medgan.evaluation.quality",
    "SegmentationResult": "medgan.evaluation.segmentation",
    "evaluate_segmentation": "medgan.evaluation.segmentation",
    "BenchmarkSettings": "medgan.evaluation.segmentation_run",
    "make_split": "medgan.evaluation.splits",
    "mean_pairwise_msssim": "medgan.similarity", "nearest_real_patches": "medgan.similarity",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
