"""medgan: GAN-generated lesion image + mask pairs for medical image segmentation training.

The public API is re-exported lazily so that ``import medgan`` (and ``medgan --help``) stays fast;
torch and MONAI load on first use of a name that needs them.
"""

from __future__ import annotations

from medgan._lazy import lazy_getattr
from medgan._version import __version__
from medgan.errors import CheckpointError, ConfigError, DataError, MedganError, OutputError

_LAZY = {
    "MedganConfig": "medgan.config",
    "load_config": "medgan.config",
    "load_datalist": "medgan.data",
    "build_patch_bank": "medgan.data",
    "check_dataset": "medgan.data",
    "Generator": "medgan.models",
    "Discriminator": "medgan.models",
    "train": "medgan.training",
    "bundled_datalist": "medgan.datasets",
    "sample_datalist": "medgan.datasets",
    "sample": "medgan.sampling",
    "load_generator": "medgan.sampling",
    "SyntheticLesionDataset": "medgan.augment",
    "mix_real_synthetic": "medgan.augment",
    "RandSyntheticLesiond": "medgan.augment",
    "evaluate_segmentation": "medgan.evaluation",
    "evaluate_quality": "medgan.evaluation",
    "evaluate_privacy": "medgan.evaluation",
}

__all__ = ["CheckpointError", "ConfigError", "DataError", "MedganError", "OutputError",
           "__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
