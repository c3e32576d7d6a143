"""GAN training: the loop, losses, differentiable augmentation, EMA and checkpoints.

:func:`train` (and its :class:`TrainResult`) is the public entry point; evaluation uses it to
train per-regime generators, never the modules below it.
"""

from medgan.training.monitor import TrainResult
from medgan.training.trainer import train

__all__ = ["TrainResult", "train"]
