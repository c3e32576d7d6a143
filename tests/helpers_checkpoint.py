"""Tiny untrained generator checkpoints for sampling and augmentation tests.

A checkpoint is written exactly as training writes it (:meth:`TrainState.checkpoint`) with a
sidecar made by :func:`medgan.checkpoint.build_metadata`, so loading goes through
the real hash verification and safetensors path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medgan.checkpoint import build_metadata
from medgan.config import config_from_dict
from medgan.data.intensity import IntensityMapping
from medgan.training.state import TrainState

#: Physical range mapped to [-1, 1] per modality in the test checkpoints.
RANGES = {"ct": (-200.0, 300.0), "mr": (10.0, 1400.0), "pet": (0.0, 10.0),
          "none": (-1.0, 1.0)}


def _structured_init(generator: torch.nn.Module) -> None:
    """Larger-than-DCGAN weights, so the untrained output has contrast and mask blobs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        convs = [m for m in generator.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        for conv in convs:
            std = 0.5 * (2.0 / conv.weight.shape[0]) ** 0.5
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
        convs[-1].bias.zero_()


def make_checkpoint(
    run_dir: Path, spatial_dims: int = 2, patch_size: int = 32, image_channels: int = 1,
    modality: str = "ct", ema: bool = True, latent_dim: int = 8, ngf: int = 8, seed: int = 0,
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
    training_cases: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``<run_dir>/checkpoints/step-00000000`` and ``latest.json``; returns ``run_dir``.

    The weights are random (see :func:`_structured_init`), the EMA copy is BatchNorm-calibrated
    by :meth:`TrainState.checkpoint` as in training. ``training_cases`` (``[{"id", "files"}]``)
    is recorded as the cases it claims to be trained on; None records none (an older
    checkpoint).
    """
    config = config_from_dict({
        "modality": modality, "spatial_dims": spatial_dims,
        "data": {"patch_size": patch_size, "spacing_mm": list(spacing_mm)},
        "model": {"latent_dim": latent_dim, "ngf": ngf, "ndf": 8},
        "train": {"steps": 1, "batch_size": 2, "ema_decay": 0.9 if ema else None},
    })
    state = TrainState.create(config, image_channels, torch.device("cpu"), seed)
    _structured_init(state.generator)
    if state.ema is not None:
        state.ema.module.load_state_dict(state.generator.state_dict())
    lo, hi = RANGES[modality]
    intensity = IntensityMapping(modality, (lo,) * image_channels, (hi,) * image_channels)
    sidecar: dict[str, Any] = {
        **build_metadata(config, image_channels=image_channels, spacing_mm=spacing_mm,
                         intensity=intensity.to_dict(), training_cases=training_cases or [],
                         seed=seed, data_fingerprint="test"),
        "history": {"loss_d": [[1, 0.5]]},
    }
    if training_cases is None:
        del sidecar["training_cases"]  # as a checkpoint that records none
    state.checkpoint(run_dir / "checkpoints", sidecar)
    return run_dir
